"""Facts about the int8 TFLite kernels that both QAT routes simulate, with no Keras import.

``keras_metapool.quantization`` (tf_keras, TF-MOT) and
``keras_metapool.keras3`` (Keras 3) fake-quantize the same tensors on the same
grids; the grids an op fixes, and the defaults both routes share, live here.
"""

#: int8 LOGISTIC output: scale 1/256 and zero point -128, i.e. [0, 255/256].
LOGISTIC_OUTPUT_RANGE = (0.0, 255.0 / 256.0)
#: int8 SOFTMAX output: the same grid as LOGISTIC's.
SOFTMAX_OUTPUT_RANGE = (0.0, 255.0 / 256.0)
#: ReLU6 output range, fixed by the op.
RELU6_OUTPUT_RANGE = (0.0, 6.0)
#: The default fixed input range of quantization-aware training: MobileNetV2's
#: [-1, 1] (``preprocess_input``) on the int8 grid of scale 1/128 with zero
#: point 0 (uint8: 128), on which -1 (black) is exact and no 8-bit pixel value
#: ``p / 127.5 - 1`` falls halfway between two steps (with [-1, 1] itself,
#: every one does, and the float simulation and the int8 kernel round those
#: ties differently). 1.0 (white) is clipped to 127/128.
MOBILENET_INPUT_RANGE = (-1.0, 127.0 / 128.0)
#: Decay of the moving average that tracks an activation range while training
#: (TF-MOT's ``MovingAverageQuantizer`` default).
MOVING_AVERAGE_DECAY = 0.999
#: Where an activation range starts without calibration (TF-MOT's default).
DEFAULT_ACTIVATION_RANGE = (-6.0, 6.0)
