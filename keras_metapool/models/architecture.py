"""Architecture specs: which Meta-Pooling op goes at each MobileNetV2 block.

An ``ArchitectureSpec`` is the readable, JSON-serializable description of a
MobileNetV2MP's enhancers: one entry per inverted-residual block (17), each

- ``"identity"``: no enhancer at this block;
- an op name (``"ssp"``, ``"avg3"``, ...): that op, fixed;
- a pair of op names (``("ssp", "avg3")``, or ``("identity", "ssp")`` for
  ``x + ssp(x)``): both ops, outputs summed;
- ``"search"``: a searchable ``MetaPoolingBlock`` over ``candidates`` (or,
  where ``point_candidates`` names a list for that block, over that list:
  ``pruned_for_input`` drops the pooling windows larger than each block's
  feature map).

plus the ``placement`` of the enhancers ("output": after the block's
projection, before its residual add; "hidden": after the depthwise ReLU, on
the expanded channels) and ``post_norm`` (whether each fixed op is followed by
BatchNormalization + hard swish, as in the search mixture and the ablations;
the paper's final model has no such extra layers).
"""

import collections.abc
import json

from keras_metapool._layer_facts import true_or_false
from keras_metapool.layers.candidate_ops import (
    CANDIDATE_OPS,
    DEFAULT_CANDIDATES,
    IDENTITY,
    prune_candidates,
    validate_op_name,
)

#: MobileNetV2's inverted-residual blocks: (expansion, filters at alpha=1,
#: stride), blocks 0..16, exactly as keras.applications builds them.
BLOCKS = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)  # fmt: skip
#: Number of inverted-residual blocks in MobileNetV2 (indices 0..16).
NUM_BLOCKS = len(BLOCKS)
SEARCH = "search"
PLACEMENTS = ("output", "hidden")
#: The search supernet's defaults: what the authors searched (the hidden
#: placement, after the depthwise ReLU6) without the post-norm, so that each
#: candidate is scored as exactly what the derived model computes there.
#: Chosen by measurement (docs/search.md, the defaults table); the paper's mixture is
#: ``placement="output", post_norm=True``.
SEARCH_PLACEMENT = "hidden"
SEARCH_POST_NORM = False

#: The choice list docs/method.md §3's ablation index lists refer to.
ABLATION_CHOICES = ("ssp", "avg3", "avg5", "avg7", "identity")
ABLATIONS = {
    "global": [0] * NUM_BLOCKS,
    "local": [1] * NUM_BLOCKS,
    "random": [0, 1, 3, 1, 2, 4, 3, 0, 2, 4, 0, 4, 1, 1, 1, 3, 3],
    "exclude_local": [4, 4, 0, 4, 4, 0, 0, 4, 0, 4, 0, 0, 4, 0, 0, 0, 0],
}
#: Blocks whose expansion is 1 have no hidden (expanded) tensor.
NO_HIDDEN_BLOCKS = tuple(i for i, (expansion, _, _) in enumerate(BLOCKS) if expansion == 1)
#: Fixed architectures known by name: ``ArchitectureSpec.named``,
#: ``MobileNetV2MP(meta_pooling=NAME)``, ``keras-metapool train --architecture=NAME``.
NAMED_ARCHITECTURES = ("paper", "none", *ABLATIONS)


def check_placement(placement):
    """Raises ValueError unless ``placement`` is one of ``PLACEMENTS``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown placement {placement!r}. Valid values: {', '.join(PLACEMENTS)}.")


def _normalize_entry(entry, index):
    """One block's entry as ``str`` (op, identity or search) or a 2-tuple."""
    where = f"meta_pooling spec, block {index}"
    if isinstance(entry, str):
        return entry if entry == SEARCH else validate_op_name(entry, where)
    if isinstance(entry, (list, tuple)):
        ops = tuple(entry)
        if len(ops) == 1:
            return _normalize_entry(ops[0], index)
        if len(ops) == 2 and ops[0] != ops[1]:
            # A pair may hold 'identity' (x + op(x)): PMPL's late stage fixes
            # undecided points to their top two ops, whatever they are.
            for op in ops:
                validate_op_name(op, where)
            return ops
    raise ValueError(
        f"{where}: expected an op name, 'search', or a pair of two distinct op "
        f"names; got {entry!r}. Valid op names: {', '.join(CANDIDATE_OPS)}."
    )


class ArchitectureSpec:
    """Per-block Meta-Pooling choices for MobileNetV2MP.

    Args:
        ops: 17 entries, one per block (see the module docstring).
        placement: "output" (default) or "hidden".
        post_norm: Follow each fixed op with BatchNormalization + hard swish.
        candidates: Candidate ops of the ``"search"`` entries.
        name: Optional label (kept in JSON and repr).
        point_candidates: Optional per-block candidate lists: 17 entries,
            each None (use ``candidates``) or a list of op names for that
            block's ``"search"`` entry. ``pruned_for_input`` fills it;
            MobileNetV2MP uses a spec that has it as it is.

    Raises:
        ValueError: for a wrong length, unknown op names, an unknown placement,
            or a hidden-placement enhancer at block 0 (which has no expansion).

    Example:
        >>> spec = ArchitectureSpec.from_indices(ABLATIONS["random"])
        >>> ArchitectureSpec.from_json(spec.to_json()) == spec
        True
    """

    def __init__(
        self,
        ops,
        placement="output",
        post_norm=True,
        candidates=DEFAULT_CANDIDATES,
        name=None,
        point_candidates=None,
    ):
        if isinstance(ops, (str, bytes)) or not hasattr(ops, "__len__"):
            raise ValueError(
                f"meta_pooling spec: `ops` must be a list of {NUM_BLOCKS} entries, got {ops!r}."
            )
        if len(ops) != NUM_BLOCKS:
            raise ValueError(
                f"meta_pooling spec: expected {NUM_BLOCKS} entries (one per MobileNetV2 "
                f"block 0..16), got {len(ops)}."
            )
        check_placement(placement)
        self.ops = tuple(_normalize_entry(entry, i) for i, entry in enumerate(ops))
        self.placement = placement
        # bool("false") is True: a hand-edited JSON would gain BN + hard swish.
        self.post_norm = true_or_false("post_norm", post_norm)
        self.candidates = tuple(validate_op_name(c, "candidates") for c in candidates)
        if len(self.candidates) < 2 or len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"`candidates` must be >= 2 distinct op names, got {candidates!r}.")
        self.name = name
        self.point_candidates = self._normalize_point_candidates(point_candidates)
        if placement == "hidden":
            for index in NO_HIDDEN_BLOCKS:
                if self.ops[index] != IDENTITY:
                    raise ValueError(
                        f"meta_pooling spec: block {index} has no expansion, so no hidden "
                        f"placement; its entry must be 'identity', got {self.ops[index]!r}."
                    )

    def _normalize_point_candidates(self, point_candidates):
        if point_candidates is None:
            return None
        if (
            isinstance(point_candidates, (str, bytes))
            or not isinstance(point_candidates, collections.abc.Sequence)
            or len(point_candidates) != NUM_BLOCKS
        ):
            raise ValueError(
                f"`point_candidates` must list {NUM_BLOCKS} entries (None or op names), "
                f"got {point_candidates!r}."
            )
        entries = []
        for index, (entry, ops) in enumerate(zip(self.ops, point_candidates)):
            if ops is None:
                entries.append(None)
                continue
            ops = tuple(validate_op_name(op, f"point_candidates[{index}]") for op in ops)
            if entry != SEARCH:
                raise ValueError(
                    f"`point_candidates[{index}]` lists candidates for block {index}, whose "
                    f"entry is {entry!r}, not 'search'."
                )
            if len(ops) < 2 or len(set(ops)) != len(ops):
                raise ValueError(
                    f"`point_candidates[{index}]` must be >= 2 distinct op names, got {ops!r}."
                )
            entries.append(ops)
        return tuple(entries) if any(e is not None for e in entries) else None

    def candidates_at(self, block_id):
        """The candidate ops of block ``block_id``'s search entry."""
        if self.point_candidates and self.point_candidates[block_id] is not None:
            return self.point_candidates[block_id]
        return self.candidates

    def pruned_for_input(self, map_sizes):
        """This spec with each search entry's candidates pruned to its map size.

        A pooling window larger than the block's feature map is dropped
        (``keras_metapool.layers.prune_candidates``). Where one candidate
        is left, the block is fixed to it (``identity``: no enhancer); where
        two or more are, their list goes into ``point_candidates``. Blocks
        with an explicit ``point_candidates`` list keep it.

        Args:
            map_sizes: 17 ``(height, width)`` pairs, the feature-map size at
                each block's enhancer (None entries: unknown, nothing pruned).

        Returns:
            A new ``ArchitectureSpec`` (``self`` when nothing changes).
        """
        if not self.is_searchable:
            return self
        ops = list(self.ops)
        point_candidates = list(self.point_candidates or [None] * NUM_BLOCKS)
        for index, entry in enumerate(self.ops):
            if entry != SEARCH or point_candidates[index] is not None:
                continue
            kept = prune_candidates(self.candidates, map_sizes[index])
            if len(kept) == 1:
                ops[index] = kept[0]
            elif kept != self.candidates:
                point_candidates[index] = kept
        pruned = ArchitectureSpec(
            ops,
            placement=self.placement,
            post_norm=self.post_norm,
            candidates=self.candidates,
            name=self.name,
            point_candidates=point_candidates,
        )
        return self if pruned == self else pruned

    # -- presets -----------------------------------------------------------
    @classmethod
    def paper(cls):
        """The paper's final model: SSP after blocks 6-16, no extra BN/hswish."""
        return cls([IDENTITY] * 6 + ["ssp"] * 11, post_norm=False, name="paper")

    @classmethod
    def plain(cls):
        """Plain MobileNetV2: no enhancer anywhere."""
        return cls([IDENTITY] * NUM_BLOCKS, name="none")

    @classmethod
    def search(
        cls, placement=SEARCH_PLACEMENT, candidates=DEFAULT_CANDIDATES, post_norm=SEARCH_POST_NORM
    ):
        """The search supernet: a MetaPoolingBlock at every insertion point.

        Defaults: the hidden placement without post-norm (``SEARCH_PLACEMENT``,
        ``SEARCH_POST_NORM``); ``search("output", post_norm=True)`` is the
        paper's mixture.
        """
        ops = [SEARCH] * NUM_BLOCKS
        if placement == "hidden":
            for index in NO_HIDDEN_BLOCKS:
                ops[index] = IDENTITY
        return cls(
            ops, placement=placement, post_norm=post_norm, candidates=candidates, name="search"
        )

    @classmethod
    def named(cls, name):
        """The fixed architecture called ``name``: one of ``NAMED_ARCHITECTURES``.

        "paper" (``paper()``), "none" (``plain()``) or an ablation
        (``ablation(name)``).
        """
        if name == "paper":
            return cls.paper()
        if name == "none":
            return cls.plain()
        if name in ABLATIONS:
            return cls.ablation(name)
        raise ValueError(
            f"Unknown architecture {name!r}. Named architectures: {', '.join(NAMED_ARCHITECTURES)}."
        )

    @classmethod
    def from_indices(cls, indices, choices=ABLATION_CHOICES, **kwargs):
        """A spec from per-block indices into ``choices`` (docs/method.md §3's form)."""
        indices = list(indices)
        for i in indices:
            # bool is an int: [True] * 17 would be an architecture of index 1.
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(choices):
                raise ValueError(
                    f"meta_pooling spec: index {i!r} is outside choices {list(choices)}."
                )
        return cls([choices[i] for i in indices], **kwargs)

    @classmethod
    def ablation(cls, name):
        """One of docs/method.md §3's ablations: global, local, random, exclude_local.

        Each op is followed by BN + hswish (``post_norm=True``), at the output
        placement.
        """
        if name not in ABLATIONS:
            raise ValueError(f"Unknown ablation {name!r}. Valid: {', '.join(ABLATIONS)}.")
        return cls.from_indices(ABLATIONS[name], name=name)

    # -- queries -----------------------------------------------------------
    @property
    def points(self):
        """Indices of the blocks that hold an enhancer or a search point."""
        return tuple(i for i, entry in enumerate(self.ops) if entry != IDENTITY)

    @property
    def is_searchable(self):
        """Whether any block holds a searchable MetaPoolingBlock."""
        return SEARCH in self.ops

    def __len__(self):
        return NUM_BLOCKS

    def __getitem__(self, index):
        return self.ops[index]

    def __eq__(self, other):
        return isinstance(other, ArchitectureSpec) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.to_json())

    def __repr__(self):
        # Runs of equal entries are grouped, so the repr stays one readable
        # line and is itself valid Python for the same spec.
        runs = []
        for entry in self.ops:
            if runs and runs[-1][0] == entry:
                runs[-1][1] += 1
            else:
                runs.append([entry, 1])
        parts, literal = [], []
        for entry, count in runs:
            if count >= 3:
                if literal:
                    parts.append(repr(literal))
                    literal = []
                parts.append(f"[{entry!r}]*{count}")
            else:
                literal.extend([entry] * count)
        if literal:
            parts.append(repr(literal))
        ops = " + ".join(parts)
        fields = [f"ops={ops}", f"placement={self.placement!r}", f"post_norm={self.post_norm}"]
        if self.is_searchable and self.candidates != DEFAULT_CANDIDATES:
            fields.append(f"candidates={self.candidates!r}")
        if self.name:
            fields.append(f"name={self.name!r}")
        if self.point_candidates:
            fields.append(f"point_candidates={self.point_candidates!r}")
        return f"ArchitectureSpec({', '.join(fields)})"

    # -- serialization -----------------------------------------------------
    def to_dict(self):
        """A JSON-ready dict (pairs become lists; ``point_candidates`` only when set)."""
        config = {
            "ops": [list(e) if isinstance(e, tuple) else e for e in self.ops],
            "placement": self.placement,
            "post_norm": self.post_norm,
            "candidates": list(self.candidates),
            "name": self.name,
        }
        if self.point_candidates:
            config["point_candidates"] = [list(c) if c else None for c in self.point_candidates]
        return config

    @classmethod
    def from_dict(cls, config):
        """Inverse of ``to_dict``; unknown keys raise ValueError."""
        if not isinstance(config, dict) or "ops" not in config:
            raise ValueError(f"An ArchitectureSpec dict needs an 'ops' list, got {config!r}.")
        known = {"ops", "placement", "post_norm", "candidates", "name", "point_candidates"}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"Unknown ArchitectureSpec keys: {sorted(unknown)}.")
        return cls(**config)

    def to_json(self, indent=None):
        """The spec as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """Parses ``to_json`` output."""
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Not a valid ArchitectureSpec JSON: {error}") from None
        return cls.from_dict(config)

    def save(self, path):
        """Writes the spec as JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path):
        """Reads a spec written by ``save``.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a valid spec.
        """
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())


def resolve_spec(meta_pooling, placement=None, search_candidates=None):
    """Turns the ``meta_pooling`` argument of MobileNetV2MP into a spec.

    Args:
        meta_pooling: "search", a name of ``NAMED_ARCHITECTURES``, an
            ``ArchitectureSpec``, or its dict form.
        placement: None (the spec's own, "output" for the presets), "output"
            or "hidden".
        search_candidates: Candidates of the "search" preset (default all 8).

    The "search" preset is at ``SEARCH_PLACEMENT`` without post-norm unless
    ``placement`` says otherwise; the other presets are at the output
    placement.

    Raises:
        ValueError: naming the argument at fault.
    """
    if placement is not None:
        check_placement(placement)
    if isinstance(meta_pooling, dict):
        meta_pooling = ArchitectureSpec.from_dict(meta_pooling)
    if isinstance(meta_pooling, ArchitectureSpec):
        if search_candidates is not None:
            raise ValueError(
                "`search_candidates` goes with meta_pooling='search'; "
                "an ArchitectureSpec carries its own `candidates`."
            )
        if placement is not None and placement != meta_pooling.placement:
            raise ValueError(
                f"placement={placement!r} contradicts the spec's placement "
                f"{meta_pooling.placement!r}; drop one of them."
            )
        return meta_pooling
    if meta_pooling == "search":
        if search_candidates is None:
            search_candidates = DEFAULT_CANDIDATES
        # An empty list is refused by the spec (>= 2 candidates), not read as "all".
        return ArchitectureSpec.search(placement or SEARCH_PLACEMENT, search_candidates)
    if isinstance(meta_pooling, str) and meta_pooling in NAMED_ARCHITECTURES:
        if search_candidates is not None:
            raise ValueError("`search_candidates` is only used with meta_pooling='search'.")
        spec = ArchitectureSpec.named(meta_pooling)
        if spec.points and placement not in (None, spec.placement):
            raise ValueError(
                f"meta_pooling={meta_pooling!r} is defined at the {spec.placement} placement; "
                "pass an ArchitectureSpec for a variant at another placement."
            )
        return spec
    raise ValueError(
        f"Unknown meta_pooling {meta_pooling!r}. Expected 'search', one of "
        f"{', '.join(NAMED_ARCHITECTURES)}, or an ArchitectureSpec."
    )
