"""Numeric argument ranges, with one home each for the library and the CLI.

A range is checked by the function that takes the argument (``PMPLCallback``,
``split_for_search``) and by the command line's flag validator, from the same
``Interval``, so ``--threshold=0`` fails when the flags are parsed, with the
words the callback would use, instead of after the supernet is built.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Interval:
    """A range of numbers: ``low < x`` or ``low <= x``, ``x < high`` or ``x <= high``.

    Attributes:
        low: Lower bound (None: none).
        high: Upper bound (None: none).
        closed: Which ends belong to the range: "both", "left", "right" or
            "neither".
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def __contains__(self, value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
        if math.isnan(value):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and not (value >= self.low if left else value > self.low):
            return False
        if self.high is not None and not (value <= self.high if right else value < self.high):
            return False
        return True

    def __str__(self):
        """ "in (0, 1]", "> 0", ">= 0"."""
        if self.high is None:
            return (">= " if self.closed in ("both", "left") else "> ") + f"{self.low:g}"
        if self.low is None:
            return ("<= " if self.closed in ("both", "right") else "< ") + f"{self.high:g}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, name, value):
        """Raises ValueError naming ``name`` unless ``value`` is in the range."""
        if value not in self:
            raise ValueError(f"`{name}` must be {self}, got {value!r}.")
        return value


#: Shares of something (a fraction of the images, of the steps): in (0, 1).
OPEN_UNIT = Interval(0.0, 1.0, "neither")
#: A BatchNormalization momentum (Keras convention): in [0, 1).
MOMENTUM = Interval(0.0, 1.0, "left")
#: A strictly positive number (an epsilon, a learning rate).
POSITIVE = Interval(0.0, None, "neither")
#: A number >= 0 (a standard deviation).
NON_NEGATIVE = Interval(0.0, None, "both")
