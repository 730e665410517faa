"""From a searched supernet to its lean fixed model.

A search model (``MobileNetV2MP(meta_pooling="search")``) holds a
``MetaPoolingBlock`` at every insertion point. Once PMPL has fixed them, the
model still computes every candidate op (at weight 0). The functions here turn
it into what is deployed:

- ``derive_architecture(model)``: the ``ArchitectureSpec`` it found;
- ``transfer_weights(search_model, fixed_model)``: its weights, copied into a
  model built from that spec (to fine-tune instead of retraining);
- ``to_fixed_model(model)``: both at once, the lean model with the search
  model's weights and predictions.
"""

import numpy as np

from keras_metapool._keras import require_tf_keras_model
from keras_metapool.layers.building import weight_values_in_order_of
from keras_metapool.layers.candidate_ops import CANDIDATE_OPS, IDENTITY
from keras_metapool.layers.meta_pooling import MetaPoolingBlock
from keras_metapool.models.architecture import NUM_BLOCKS, ArchitectureSpec
from keras_metapool.models.mobilenet_v2_mp import MobileNetV2MP
from keras_metapool.models.naming import (
    enhancer_part_name,
    op_layer_name,
    point_of,
    point_of_enhancer_layer,
)
from keras_metapool.models.transfer import builder_arguments, precision_of

#: What an undecided point becomes in ``derive_architecture`` (and, but for
#: "error", at the end of a PMPL search): no enhancer (the default: a point the
#: search could not decide costs nothing), its most probable op (docs/method.md §4's
#: rule for the result), its two most probable ops summed (the paper's late
#: stage), or an error.
UNDECIDED_RULES = ("identity", "argmax", "top2", "error")


def search_blocks(model):
    """The ``MetaPoolingBlock`` layers of a MobileNetV2MP, by block index.

    Args:
        model: A ``tf_keras`` model built by ``MobileNetV2MP``.

    Returns:
        A dict ``{block index: MetaPoolingBlock}``, in block order (empty for
        a model without search points).

    Raises:
        ValueError: if ``model`` is not a tf_keras model, or holds a
            MetaPoolingBlock whose name does not say where it sits.
    """
    require_tf_keras_model(model, "search_blocks")
    blocks = {}
    for layer in model.layers:
        if isinstance(layer, MetaPoolingBlock):
            point = point_of(layer.name)
            if point is None:
                raise ValueError(
                    f"MetaPoolingBlock '{layer.name}' does not carry a MobileNetV2MP "
                    "enhancer name (block_<i>_mp or block_<i>_hidden_mp); was the model "
                    "built by MobileNetV2MP?"
                )
            blocks[point[0]] = layer
    return dict(sorted(blocks.items()))


def _placement_of(model):
    points = (point_of_enhancer_layer(layer.name) for layer in model.layers)
    placements = {point[1] for point in points if point}
    if len(placements) > 1:
        raise ValueError("The model mixes output and hidden placements; it is not a MobileNetV2MP.")
    return placements.pop() if placements else "output"


def _fixed_entry(model, block_id, placement):
    """The fixed (non-search) enhancer entry of a block, read from layer names."""
    layer_names = {layer.name for layer in model.layers}
    ops = tuple(op for op in CANDIDATE_OPS if op_layer_name(block_id, placement, op) in layer_names)
    if not ops:
        return IDENTITY, None
    post_norm = enhancer_part_name(block_id, placement, "BN") in layer_names
    return (ops[0] if len(ops) == 1 else ops), post_norm


def top_ops(block, count):
    """A block's ``count`` most probable ops, in candidate order (ties: candidate order)."""
    probs = np.asarray(list(block.probabilities().values()))
    order = np.argsort(-probs, kind="stable")[:count]
    return tuple(block.candidates[i] for i in sorted(order))


def undecided_ops(block, rule):
    """What an undecided search point becomes under ``rule`` (``UNDECIDED_RULES``)."""
    if rule == "identity":
        return (IDENTITY,)
    if rule in ("argmax", "top2"):
        return top_ops(block, 1 if rule == "argmax" else 2)
    raise ValueError(
        f"Unknown undecided={rule!r} for a point. Valid values: identity, argmax, top2."
    )


def derive_architecture(model, undecided="identity", name=None):
    """The architecture a (searched) MobileNetV2MP stands for.

    Each search point becomes its fixed op or pair. A point the search has not
    fixed yet becomes, per ``undecided``: ``"identity"`` (default: no
    enhancer, as PMPLCallback decides undecided points by default),
    ``"argmax"`` (its most probable op, docs/method.md §4's rule for the result),
    ``"top2"`` (its two most probable ops, what the paper's late stage fixes),
    or an error (``"error"``). Blocks without a search point keep what the
    model has there.

    Args:
        model: A MobileNetV2MP with at least one ``MetaPoolingBlock``.
        undecided: One of ``UNDECIDED_RULES``.
        name: Name of the returned spec (default ``"derived"``).

    Returns:
        An ``ArchitectureSpec`` with the search points' ``post_norm`` (a
        point searched with BN + hard swish keeps them in its fixed form) and
        the model's placement. ``MobileNetV2MP(meta_pooling=spec, ...)``
        builds the lean model; ``to_fixed_model`` builds it with the weights.

    Raises:
        ValueError: if the model has no search point, has undecided points
            with ``undecided="error"``, or mixes enhancers with and without
            BN + hard swish (a spec cannot hold both).
    """
    if undecided not in UNDECIDED_RULES:
        raise ValueError(
            f"Unknown undecided={undecided!r}. Valid values: {', '.join(UNDECIDED_RULES)}."
        )
    blocks = search_blocks(model)
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no MetaPoolingBlock: there is no search to derive an "
            "architecture from. Build it with MobileNetV2MP(meta_pooling='search')."
        )
    placement = _placement_of(model)
    post_norms = {block.post_norm for block in blocks.values()}
    if len(post_norms) > 1:
        raise ValueError("The model's search points differ in post_norm; no spec describes it.")
    post_norm = post_norms.pop()
    ops = []
    unfixed = []
    for block_id in range(NUM_BLOCKS):
        block = blocks.get(block_id)
        if block is None:
            entry, entry_post_norm = _fixed_entry(model, block_id, placement)
            if entry_post_norm is not None and entry_post_norm != post_norm:
                raise ValueError(
                    f"Block {block_id} holds a fixed enhancer "
                    f"{'with' if entry_post_norm else 'without'} BN + hard swish beside "
                    f"search points {'with' if post_norm else 'without'} them; no single "
                    "ArchitectureSpec describes that model."
                )
            ops.append(entry)
            continue
        fixed = block.fixed_ops
        if fixed is None:
            unfixed.append(block_id)
            if undecided != "error":
                fixed = undecided_ops(block, undecided)
        if fixed is not None:
            ops.append(fixed[0] if len(fixed) == 1 else fixed)
    if unfixed and undecided == "error":
        raise ValueError(_unfixed_message(model, unfixed))
    return ArchitectureSpec(ops, placement=placement, post_norm=post_norm, name=name or "derived")


def _unfixed_message(model, unfixed):
    return (
        f"Model '{model.name}' still has {len(unfixed)} unfixed search point(s), at "
        f"block(s) {unfixed}. Finish the search first (PMPLCallback fixes every point by "
        "the end of fit), or fix them yourself with keras_metapool.derive_architecture("
        "model) and MobileNetV2MP(meta_pooling=spec) plus transfer_weights."
    )


def _enhancer_sources(search_model):
    """Fixed-model layer name -> the search-model sublayer holding its weights."""
    sources = {}
    for block in search_blocks(search_model).values():
        for op_name, op in zip(block.candidates, block.ops):
            sources[f"{block.name}_{op_name}"] = op
        if block.bn is not None:
            sources[f"{block.name}_BN"] = block.bn
    return sources


def transfer_weights(search_model, fixed_model):
    """Copies a search model's weights into a model of a derived architecture.

    Shared layers are matched by name; each fixed enhancer layer
    ``<point>_<op>`` takes the weights of candidate ``op`` of the search
    point ``<point>``, and ``<point>_BN`` those of the point's
    BatchNormalization. With the architecture the search fixed, the result
    predicts exactly like the search model; with another one, it is a warm
    start for fine-tuning.

    Args:
        search_model: The MobileNetV2MP that was searched.
        fixed_model: A MobileNetV2MP built from a spec with the same frame
            (width, input size, classifier).

    Returns:
        ``fixed_model``, for chaining.

    Raises:
        ValueError: if a weighted layer of ``fixed_model`` has no source in
            ``search_model`` or the shapes differ (nothing is assigned then).
    """
    sources = _enhancer_sources(search_model)
    search_layers = {layer.name: layer for layer in search_model.layers}
    assignments = []
    for layer in fixed_model.layers:
        if not layer.weights:
            continue
        source = sources.get(layer.name) or search_layers.get(layer.name)
        if source is None:
            raise ValueError(
                f"transfer_weights: layer '{layer.name}' of the fixed model has no "
                f"counterpart in '{search_model.name}' (is the op among the search "
                "point's candidates?)."
            )
        values = weight_values_in_order_of(source, layer)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"transfer_weights: layer '{layer.name}' expects weight shapes {expected}, "
                f"the search model has {[v.shape for v in values]} (different width, input "
                "or classes?)."
            )
        assignments.append((layer, values))
    for layer, values in assignments:
        layer.set_weights(values)
    return fixed_model


def to_fixed_model(model, name=None):
    """The lean model of a fully fixed search model, with its weights.

    A model without ``MetaPoolingBlock`` (already lean) is returned as is.

    Args:
        model: A MobileNetV2MP; its search points must all be fixed (as they
            are after ``fit`` with ``PMPLCallback``).
        name: Name of the new model (default: MobileNetV2MP's default).

    Returns:
        A MobileNetV2MP built from ``derive_architecture(model)`` that holds
        no MetaPoolingBlock and computes only the chosen ops, with the
        search model's weights: it predicts like ``model`` (up to float
        rounding).

    Raises:
        ValueError: if some search point is not fixed; the message says how
            to finish; if ``model`` is not a tf_keras model (the message
            names the way in for a Keras 3 one).
    """
    require_tf_keras_model(model, "to_fixed_model")
    blocks = search_blocks(model)
    if not blocks:
        return model
    unfixed = [block_id for block_id, block in blocks.items() if not block.is_fixed]
    if unfixed:
        raise ValueError(_unfixed_message(model, unfixed))
    spec = derive_architecture(model, undecided="error")
    with precision_of(model):
        fixed = MobileNetV2MP(meta_pooling=spec, name=name, **builder_arguments(model))
    return transfer_weights(model, fixed)
