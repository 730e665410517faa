"""The ImageNet recipe of the paper's final model (docs/method.md §5), as a script.

    python examples/imagenet_recipe.py --dry_run      # checks the script here, under a minute
    python examples/imagenet_recipe.py --data_dir=/data/tfds --strategy=mirrored   # 8 GPUs
    python examples/imagenet_recipe.py --data_dir=gs://BUCKET/tfds --strategy=tpu --tpu=local \\
        --steps_per_execution=32          # Cloud TPU VM: data on GCS, artifacts on local disk
    python examples/imagenet_recipe.py --architecture=runs/search/architecture.json --head=classic

Not run in CI, and never run to the end on this project's machines (2 CPU
cores, no ImageNet): 300 epochs of ImageNet are a multi-GPU or TPU job. The
paper reports 74.6% top-1 for MobileNetV2 + Meta-Pooling (width 1.0, 224x224)
with its recipe; this script was not run to convergence, so it reproduces
nothing yet. ``--dry_run`` builds the same model, optimizer, schedule, loss and
input pipeline on Fashion-MNIST at 32x32 and runs 2 training and 2 validation
steps (plus the checkpoint callbacks, in a temporary folder), so the script
can be checked without ImageNet.

**Data.** tensorflow-datasets' ``imagenet2012`` needs a manual download:

1. register at https://image-net.org/download-images and download
   ``ILSVRC2012_img_train.tar`` (~148 GB) and ``ILSVRC2012_img_val.tar``
   (~6.7 GB);
2. put both in ``<data_dir>/downloads/manual/``;
3. ``tfds build imagenet2012 --data_dir=<data_dir>`` (hours; the TFRecords
   take about as much disk again; the tars can go afterwards);
4. ``python examples/imagenet_recipe.py --data_dir=<data_dir>``.

``--data_dir`` defaults to ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
When ``imagenet2012`` is not prepared there, the script stops at once with a
one-line message saying this. Nothing is downloaded at run time.

**The recipe** (docs/method.md §5, in italics) and what this script does:

- *MobileNetV2 + SSP after blocks 6-16*:
  ``MobileNetV2MP(meta_pooling="paper")``. ``--architecture`` also takes an
  architecture JSON (``PMPLCallback.architecture.save``), or ``none`` (the
  baseline).
- *Head: pool, 1x1 conv 1280 with bias, hard swish, dropout 0.2*:
  ``--head=paper`` (default; +1.64M parameters at width 1.0).
  ``--head=classic`` is keras.applications' head, which has no dropout.
  Report accuracy with both.
- *Batch 2048*: ``--batch_size=2048`` is the **global** batch;
  ``keras_metapool.distribute.make_strategy`` (``--strategy``) splits it over
  the replicas (8 GPUs: 256 each).
- *LAMB, lr 0.005 at batch 2048*: **tf_keras has no LAMB** (tensorflow_addons
  had one; it is end-of-life, not installed and not imported here), so
  ``keras.optimizers.AdamW``. Peak lr = ``--learning_rate`` x batch / 2048
  (linear scaling). The rate is LAMB's: AdamW lacks LAMB's per-layer trust
  ratio, so it may need tuning.
- *Weight decay 0.1*: AdamW's decoupled decay (weight -= lr x 0.1 x weight
  per step, as PyTorch/timm), not applied to biases and batch-norm
  parameters (timm's default).
- *Cosine schedule, 5 warm-up epochs, 300 epochs*:
  ``keras.optimizers.schedules.CosineDecay(0, steps, warmup_target=lr,
  warmup_steps=5 epochs)``: linear warm-up, then cosine decay to 0, per step.
- *Label smoothing 0.1*: ``CategoricalCrossentropy(label_smoothing=0.1)`` on
  one-hot labels.
- *BN momentum 0.1 (PyTorch's convention)*: ``batch_norm_momentum=0.9``
  (Keras' convention for the same thing).
- *RandAugment m9*: ``load_dataset(augment="randaugment")``, which is
  RandAugment-*style*: 2 ops per image drawn from identity, brightness,
  contrast, saturation, translate, rotate and cutout at fixed strengths, then
  a random resized crop and flip. It is not timm's ``rand-m9-mstd0.5`` (more
  ops, magnitude 9).
- *Random erasing 0.2*: **not implemented** (the cutout op above is the
  nearest thing).
- *Mixup 0.15*: **not implemented**.
- *No EMA*: no EMA.
- *Evaluation*: **a plain resize to 224** (load_dataset's evaluation
  preprocessing), not the usual resize + 87.5% center crop; this usually
  costs some top-1.

Artifacts in ``--output_dir``: ``architecture.json``, ``history.csv``,
``checkpoints/last.keras`` (every epoch), ``model.keras`` (the end) and
``backup/`` (``BackupAndRestore``: rerun the same command after an
interruption and training resumes at the last finished epoch). In a
multi-worker run ``--output_dir`` must be storage every worker reaches (the
backup is shared); only the chief keeps its files there.
"""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import DatasetNotFoundError, load_dataset  # noqa: E402
from keras_metapool.distribute import STRATEGIES, make_strategy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "dry_run",
    False,
    "Check the script without ImageNet: the same model, optimizer and pipeline on "
    "Fashion-MNIST at 32x32, global batch 16, 2 training and 2 validation steps.",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "tfds data folder holding imagenet2012 (default $TFDS_DATA_DIR or "
    "~/tensorflow_datasets; gs:// for TPUs).",
)
flags.DEFINE_string(
    "architecture",
    "paper",
    "A named architecture ('paper', 'none': plain MobileNetV2, or an ablation: 'global', "
    "'local', 'random', 'exclude_local') or an architecture JSON file.",
)
flags.DEFINE_enum("head", "paper", ["paper", "classic"], "Classifier head (see the docstring).")
flags.DEFINE_float("alpha", 1.0, "Width multiplier (the paper: 1.0, 0.75, 0.5).")
flags.DEFINE_integer("image_size", 224, "Input size.", lower_bound=32)
flags.DEFINE_integer("epochs", 300, "Training epochs.", lower_bound=1)
flags.DEFINE_float("warmup_epochs", 5.0, "Linear warm-up epochs.", lower_bound=0.0)
flags.DEFINE_integer("batch_size", 2048, "GLOBAL batch size (split over replicas).", lower_bound=1)
flags.DEFINE_integer(
    "eval_batch_size", 1000, "Global validation batch (ImageNet: 50,000 images).", lower_bound=1
)
flags.DEFINE_float(
    "learning_rate", 0.005, "Peak learning rate at batch 2048; scaled by batch_size / 2048."
)
flags.DEFINE_float("weight_decay", 0.1, "AdamW decoupled weight decay.", lower_bound=0.0)
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("batch_norm_momentum", 0.9, "Keras BN momentum (PyTorch 0.1).")
flags.DEFINE_enum(
    "augment", "randaugment", ["randaugment", "basic", "none"], "load_dataset augmentation."
)
flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy (make_strategy).")
flags.DEFINE_string("tpu", None, "For --strategy=tpu: 'local' on a TPU VM, a name or grpc://.")
flags.DEFINE_integer(
    "cpu_devices",
    None,
    "Split the CPU into N logical devices (test 'mirrored' without GPUs).",
    lower_bound=2,
)
flags.DEFINE_integer("steps_per_execution", 1, "Steps per tf.function call (TPU: 32+).")
flags.DEFINE_integer("validation_freq", 1, "Validate every N epochs.", lower_bound=1)
flags.DEFINE_string("output_dir", "runs/imagenet_recipe", "Artifacts and the resume backup.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and augmentation.")

REFERENCE_BATCH = 2048
IMAGENET = "tfds:imagenet2012"
DRY_RUN_BATCH = 16
DRY_RUN_STEPS = 2


def check_imagenet_prepared(data_dir):
    """Exits with a one-line message unless tfds' imagenet2012 is prepared in data_dir."""
    import tensorflow_datasets as tfds

    from keras_metapool.data.sources import default_tfds_data_dir

    folder = data_dir or os.fspath(default_tfds_data_dir())
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about the missing folder
    try:
        prepared = tfds.builder("imagenet2012", data_dir=folder).is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        sys.exit(
            f"error: imagenet2012 is not prepared in {folder}: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {os.path.join(folder, 'downloads', 'manual')}/, run "
            f"`tfds build imagenet2012 --data_dir={folder}`, then rerun (or pass --data_dir; "
            "--dry_run checks the script without ImageNet)."
        )


def is_chief(strategy):
    """Whether this process writes the artifacts (all but non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def load(split, batch_size, training, limit, tpu):
    """Batches of ``(images, one-hot labels)`` and the DatasetInfo."""
    name = "fashion_mnist" if FLAGS.dry_run else IMAGENET
    dataset, info = load_dataset(
        name,
        split=split,
        image_size=FLAGS.image_size,
        batch_size=batch_size,
        training=training,
        augment=FLAGS.augment,
        seed=FLAGS.seed,
        data_dir=None if FLAGS.dry_run else FLAGS.data_dir,
        limit=limit,
        drop_remainder=training or tpu,  # fixed steps per epoch; TPUs need static shapes
    )
    # One-hot labels: the label-smoothing loss takes them.
    dataset = dataset.map(lambda x, y: (x, tf.one_hot(y, info.num_classes)))
    return dataset, info


def main(argv):
    del argv
    if FLAGS.dry_run:
        FLAGS.image_size, FLAGS.batch_size, FLAGS.eval_batch_size = 32, DRY_RUN_BATCH, DRY_RUN_BATCH
        FLAGS.epochs = 1
    else:
        check_imagenet_prepared(FLAGS.data_dir)  # fail fast, before any device starts

    # The strategy comes first, before any other TensorFlow op.
    strategy = make_strategy(FLAGS.strategy, tpu=FLAGS.tpu, cpu_devices=FLAGS.cpu_devices)
    replicas = strategy.num_replicas_in_sync
    on_tpu = FLAGS.strategy == "tpu"
    keras.utils.set_random_seed(FLAGS.seed)

    # -- Data: the global batch; the strategy splits it over the replicas -------------
    limit = DRY_RUN_STEPS * FLAGS.batch_size if FLAGS.dry_run else None
    try:
        train, info = load("train", FLAGS.batch_size, True, limit, on_tpu)
        validation, _ = load(
            "test" if FLAGS.dry_run else "validation", FLAGS.eval_batch_size, False, limit, on_tpu
        )
    except DatasetNotFoundError as error:
        sys.exit(f"error: {error}")
    steps_per_epoch = info.num_examples // FLAGS.batch_size
    if steps_per_epoch < 1:
        sys.exit(f"error: --batch_size={FLAGS.batch_size} exceeds the {info.num_examples} images.")
    total_steps = steps_per_epoch * FLAGS.epochs
    warmup_steps = min(round(FLAGS.warmup_epochs * steps_per_epoch), total_steps - 1)
    learning_rate = FLAGS.learning_rate * FLAGS.batch_size / REFERENCE_BATCH

    try:
        if os.path.isfile(FLAGS.architecture):
            meta_pooling = km.ArchitectureSpec.load(FLAGS.architecture)
        else:  # a name; an unknown one gets the list of names
            meta_pooling = km.ArchitectureSpec.named(FLAGS.architecture)
    except ValueError as error:
        sys.exit(f"error: --architecture: {error}")

    with strategy.scope():
        # -- Model ------------------------------------------------------------------
        model = km.MobileNetV2MP(
            weights=None,
            meta_pooling=meta_pooling,
            head=FLAGS.head,  # "paper": 1x1 conv 1280, hard swish, Dropout(0.2)
            input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
            alpha=FLAGS.alpha,
            classes=info.num_classes,
            batch_norm_momentum=FLAGS.batch_norm_momentum,
        )
        # -- Optimizer: AdamW (no LAMB in tf_keras), warm-up + cosine per step -------
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=FLAGS.weight_decay)
        # As timm: no decay on biases and batch-norm scales/offsets (1-D variables).
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if v.shape.rank <= 1]
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=FLAGS.label_smoothing),
            metrics=[
                keras.metrics.CategoricalAccuracy(name="top1"),
                keras.metrics.TopKCategoricalAccuracy(5, name="top5"),
            ],
            steps_per_execution=FLAGS.steps_per_execution,
        )

    print(
        f"{'DRY RUN (Fashion-MNIST, 32x32): ' if FLAGS.dry_run else ''}{model.name}, "
        f"architecture {FLAGS.architecture!r}, head {FLAGS.head!r}, "
        f"{model.count_params():,} parameters\n"
        f"  {replicas} replica(s) ({type(strategy).__name__}); global batch {FLAGS.batch_size} "
        f"= {FLAGS.batch_size / replicas:g} per replica\n"
        f"  AdamW: peak lr {learning_rate:.6g} (= {FLAGS.learning_rate} x {FLAGS.batch_size} / "
        f"{REFERENCE_BATCH}), weight decay {FLAGS.weight_decay}, {warmup_steps} warm-up steps, "
        f"cosine to 0 at step {total_steps}\n"
        f"  {info.num_examples} training images: {steps_per_epoch} steps x {FLAGS.epochs} "
        f"epoch(s); label smoothing {FLAGS.label_smoothing}; augment {FLAGS.augment!r}; "
        f"BN momentum {FLAGS.batch_norm_momentum}",
        flush=True,
    )

    # -- Artifacts: only the chief keeps them; resumable through BackupAndRestore -----
    # BackupAndRestore and ModelCheckpoint take the same folder on every worker
    # (shared storage) and keep the non-chief workers' files apart themselves;
    # the other files of a non-chief worker go to a private temporary folder.
    root = tempfile.mkdtemp(prefix="imagenet_recipe_") if FLAGS.dry_run else FLAGS.output_dir
    own = root if is_chief(strategy) else tempfile.mkdtemp(prefix="imagenet_recipe_worker_")
    temporaries = [folder for folder in {root, own} if folder != FLAGS.output_dir]
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    if meta_pooling.points:
        meta_pooling.save(os.path.join(own, "architecture.json"))
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(root, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(root, "checkpoints", "last.keras")),
        keras.callbacks.CSVLogger(os.path.join(own, "history.csv"), append=True),
    ]
    try:
        history = model.fit(
            train,
            epochs=FLAGS.epochs,
            steps_per_epoch=DRY_RUN_STEPS if FLAGS.dry_run else steps_per_epoch,
            validation_data=validation,
            validation_steps=DRY_RUN_STEPS if FLAGS.dry_run else None,
            validation_freq=FLAGS.validation_freq,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        model.save(os.path.join(own, "model.keras"))
        last = {key: values[-1] for key, values in history.history.items()}
        print(
            "last epoch: " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items()))
        )
        if FLAGS.dry_run:
            print(
                f"dry run done: {DRY_RUN_STEPS} training and {DRY_RUN_STEPS} validation steps; "
                f"checkpoints, history and model were written to {root} (now removed)."
            )
        else:
            print(f"model: {os.path.join(own, 'model.keras')}")
    finally:
        for folder in temporaries:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
