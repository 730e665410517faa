"""Keras 3 flavour of keras_metapool: fixed float Meta-Pooling models in Keras 3.

Search and QAT run in tf_keras (TF-MOT, the QAT route to the Edge TPU, rejects
Keras 3 models); float models, fine-tuning and inference run in both. This
package holds what a Keras 3 user needs:

- ``SpatialEnhancer`` and ``HardSwish`` (``keras.ops``, any backend,
  registered for ``.keras`` files);
- ``to_keras3(model)``: a fixed float tf_keras MobileNetV2MP -> a Keras 3 model
  with the same predictions;
- ``MobileNetV2MP(...)``: the keras.applications-style builder for fixed
  architectures (``"paper"``, ``"none"``, any ``ArchitectureSpec``), returning
  a Keras 3 model (built by the one tf_keras builder, then converted).

Importing this package (or ``keras_metapool.keras3.layers``) imports Keras 3
and the two layers only, not tf_keras: a ``.keras`` file of a converted model
loads with ``import keras_metapool.keras3`` and ``keras.saving.load_model``.
``to_keras3`` and ``MobileNetV2MP`` import tf_keras when called.
"""

from keras_metapool.keras3.layers import HardSwish, SpatialEnhancer, hard_swish


def to_keras3(model, name=None):
    """A fixed float tf_keras MobileNetV2MP as a Keras 3 model (same predictions).

    See ``keras_metapool.keras3.convert.to_keras3``.
    """
    from keras_metapool.keras3.convert import to_keras3 as convert

    return convert(model, name=name)


def MobileNetV2MP(*args, meta_pooling="paper", **kwargs):  # noqa: N802 (keras.applications style)
    """``keras_metapool.MobileNetV2MP`` for fixed architectures, as a Keras 3 model.

    Takes the arguments of ``keras_metapool.MobileNetV2MP`` (the
    keras.applications signature plus the Meta-Pooling ones); ``meta_pooling``
    defaults to ``"paper"`` and must name a fixed architecture (``"paper"``,
    ``"none"`` or an ``ArchitectureSpec`` without search points): the search
    runs in tf_keras (``keras_metapool.MobileNetV2MP`` with ``PMPLCallback``).

    Returns:
        A Keras 3 ``keras.Model`` with the layer names of the tf_keras model.
    """
    from keras_metapool.models.architecture import SEARCH, resolve_spec

    spec = resolve_spec(meta_pooling, kwargs.get("placement"), kwargs.get("search_candidates"))
    if any(entry == SEARCH for entry in spec.ops):
        raise ValueError(
            "keras_metapool.keras3.MobileNetV2MP builds fixed architectures; "
            f"meta_pooling={meta_pooling!r} has search points. Search in tf_keras "
            "(keras_metapool.MobileNetV2MP + PMPLCallback), then "
            "keras_metapool.keras3.to_keras3(keras_metapool.to_fixed_model(model))."
        )
    import keras_metapool

    model = keras_metapool.MobileNetV2MP(*args, meta_pooling=meta_pooling, **kwargs)
    return to_keras3(model)


__all__ = ["HardSwish", "MobileNetV2MP", "SpatialEnhancer", "hard_swish", "to_keras3"]
