"""Does Meta-Pooling help? MobileNetV2 vs MobileNetV2MP, its ablations and PMPL, on real data.

Every variant is trained on the same images, with the same schedule, seeds
and budget, then evaluated on the same test images:

- ``mobilenet_v2``: ``MobileNetV2MP(meta_pooling="none")``, keras.applications'
  MobileNetV2 with its classic head;
- ``mp_paper``: ``meta_pooling="paper"``, SSP after blocks 6-16 (the paper's
  final model), classic head;
- ``mp_paper_head``: the same with ``head="paper"`` (1x1 conv 1280->1280 +
  hard swish + dropout before the classifier);
- ``mp_paper_open``: ``mp_paper`` built with ``enhancer_init="open_gates"``
  (each SSP starts as a constant scale near 1 instead of the paper's random
  gates around 0.5: does the init decide how fast it trains?);
- ``ssp_all``: SSP after every block, without BN + hard swish after it;
- ``se_paper``: squeeze-and-excitation (``SqueezeExcite``, MobileNetV3's
  channel gating) where ``mp_paper`` has SSP: whether SSP's row and column
  structure matters, or only gating does;
- ``global``, ``local``, ``random``, ``exclude_local``: docs/method.md §3's
  ablations, ``ArchitectureSpec.ablation(name)``;
- ``searched``: the architecture a PMPL search finds (``PMPLCallback``'s
  defaults; supernet weights on one part of the training images, alpha on
  the held-out rest: ``load_dataset(search_part=...)``), then trained from
  scratch like the others; its training time includes the search;
- ``searched_inherited``: the same architecture, starting from the
  supernet's weights (``to_fixed_model``) and trained like the others; its
  time includes the search too;
- ``random_arch``: an architecture drawn uniformly from the same search space
  (each point: one of its pruned candidates, seeded per run), trained from
  scratch: the baseline a search must beat (Li & Talwalkar, arXiv 1902.07638);
- ``random_matched``: as ``random_arch``, but with as many enhancers as
  the searched architecture of its seed, at points drawn uniformly (an
  op other than ``identity`` each): whether the search chose *where* well,
  not only *how many*;
- ``random_searched``: random search at the PMPL search's compute (Li &
  Talwalkar): architectures drawn as ``random_arch`` draws them each train
  ``--random_search_epochs`` on the search's weight part and are scored on
  its held-out part until the CPU time of the seed's search is spent; the
  best is trained from scratch like the others, its time including the
  random search (the ``random_search_<config>_seed<N>.json`` file lists every
  architecture tried, its score and CPU time);
- ``param_matched``: ``meta_pooling="none"`` at a larger alpha, found by
  bisection, whose parameter count matches ``mp_paper``'s within
  ``--match_tolerance`` (so a gain is not just more parameters).

Reported per variant and (alpha, input size): test accuracy mean ± std over
seeds, with the difference to MobileNetV2 and its paired test (runs of one
seed share their data order), and tables of paired comparisons with 95%
intervals and Holm-corrected p-values, with the power they had (two families,
each corrected on its own: the fixed architectures, and the searched child
against MobileNetV2, the parameter-matched one, the best fixed variant and the
random baselines); parameters and
MACs (``keras_metapool.models.count_params`` / ``count_macs``); float and
int8 TFLite latency as a ratio to MobileNetV2 (batch 1, one thread, the
models' invokes interleaved in one run, as ``benchmarks/deploy.py`` does:
``keras_metapool.study.machine.interleaved_latency``; latency does not depend on the weights, so
these models are freshly built, not the trained ones); training time.

Commands (``keras-metapool study``, ``python -m keras_metapool.study`` and
``python benchmarks/study.py`` are the same program; ``--help`` lists the
flags):

    keras-metapool study --estimate   # time a few steps of every model: the plan's ETA
    keras-metapool study              # the default study: 1h26m on 2 idle CPU cores
    keras-metapool study --extra_configs=0.35@96   # + a 96x96 run at alpha 0.35
    keras-metapool study --quick      # minutes: the pipeline end to end (tests use it)
    keras-metapool study --dataset=folder:PATH --seeds=0,1,2 \\
        --variants=mobilenet_v2,mp_paper,param_matched,searched   # your data

The package: ``plan`` (flags, variants, configurations, tasks, result
files), ``runs`` (data, models; the search, training and latency runs),
``estimate`` (``--estimate``), ``stats`` and ``report`` (study.md),
``plots``, ``machine`` (latency measurement, the machine's description).

The default: Fashion-MNIST upsampled to 64x64 (at 32x32, blocks 6-16 see 4x4
to 1x1 maps, where SSP degenerates into channel gating), alpha 0.35 and 1.0,
seeds 0, 1, 2, every variant; the training subset and epochs are sized to fit
the whole study in 2 hours on 2 CPU cores (measured: 1h26m wall clock, 106
CPU-minutes, on an otherwise idle 2-core AMD EPYC; ``--estimate`` predicted
1h11m). The 96x96 run is not in the default: it does not fit the 2 hours.

Resumable: each run writes ``<output_dir>/<run-id>.json`` atomically
(``<variant>_a<alpha>_px<size>_seed<seed>.json``, ``search_...``,
``latency_a<alpha>_px<size>.json``, ``param_match_a<alpha>_c<classes>.json``);
a run whose file exists is skipped, so an interrupted study continues where
it stopped (a configuration's latency is timed again whenever one of its runs
runs, or when the study has more seeds or variants than it timed: the table
shows the latency of every architecture it trained). Every file records the
settings it was made with; an existing file made with other settings stops
the study with an error (use another ``--output_dir``). At the end (and on
every rerun) the study writes ``<output_dir>/study.md`` (the tables, the exact
command, the machine, and "What this shows / does not show", generated from
the numbers) and the plots
``study_accuracy.png`` (accuracy mean ± std per variant) and ``study_cost.png``
(accuracy against MACs and latency).

``--estimate`` builds every model of the plan, times its first step
(tracing), a few training steps (wall and CPU time), evaluation and TFLite
conversion, writes ``timing.json`` and prints the predicted duration of
every run and of the whole study; a later study in the same ``--output_dir``
uses it for its ETA. On a machine shared with other jobs, the wall-time
prediction carries their load; the CPU-time one is what 2 idle cores would
take if TensorFlow kept both busy (a lower bound).

Any dataset ``keras_metapool.data.load_dataset`` reads works:
``--dataset=tfds:NAME`` (prepared in ``--data_dir``), or ``folder:PATH``.
Imagenette on a GPU machine (``tfds build imagenette/320px
--data_dir=/data/tfds`` first, on a machine with internet)::

    keras-metapool study --dataset=tfds:imagenette/320px --data_dir=/data/tfds \\
        --test_split=validation --sizes=224 --alphas=0.35,1.0 --seeds=0,1,2 \\
        --train_images=0 --test_images=0 --epochs=30 --search_epochs=30 \\
        --batch_size=64 --augment=basic --output_dir=results/imagenette

(``--train_images=0`` / ``--test_images=0``: the whole split.) Nothing in the
study is specific to Fashion-MNIST or to CPUs; ``model.fit`` uses the GPU
when TensorFlow sees one.
"""

from keras_metapool.study.estimate import format_duration
from keras_metapool.study.main import PROGRAM, main, run
from keras_metapool.study.plan import FLAGS, VARIANT_BY_KEY, VARIANTS, Config
from keras_metapool.study.report import conclusions
from keras_metapool.study.runs import random_architecture
from keras_metapool.study.stats import holm, paired, paired_detectable, paired_power, welch

__all__ = [
    "FLAGS",
    "PROGRAM",
    "VARIANTS",
    "VARIANT_BY_KEY",
    "Config",
    "conclusions",
    "format_duration",
    "main",
    "random_architecture",
    "run",
    "holm",
    "paired",
    "paired_detectable",
    "paired_power",
    "welch",
]
