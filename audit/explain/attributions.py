"""The result of one explainer on a set of inputs (inseq style: a dataclass with save/load).

Layouts of ``ExampleAttribution.scores``:

* ``token``     — ``(K, T)``: one row per target (K = 1 except for generation), one column per token;
* ``attention`` — ``(L', H', T, T)``: raw attention of the selected layers / heads
  (row = query token, column = source token);
* ``matrix``    — ``(T, T)``: token-to-token relevance (attention rollout, gradient rollout);
* ``heads``     — ``(L, H)``: head importance.

Every layout except ``heads`` also carries ``token_scores`` ``(K, T)``: the per-token attribution
of each target that faithfulness metrics and heat maps use (NaN where the target cannot see a
token, i.e. tokens after a generated token).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LAYOUTS = ("token", "attention", "matrix", "heads")
FRAME_COLUMNS = ["example", "text", "method", "target", "token_index", "token", "score", "layer", "head",
                 "source_index", "target_index"]
_INT_COLUMNS = ["token_index", "layer", "head", "source_index", "target_index"]


@dataclass
class ExampleAttribution:
    """Attribution of one input."""

    index: int
    text: str
    tokens: list[str]
    scores: np.ndarray
    token_scores: np.ndarray | None
    target_names: list[str]
    attributable: np.ndarray
    target_positions: list[int] | None = None
    #: Integrated Gradients: per target f_input, f_baseline, attribution_sum, delta, gap, n_steps
    completeness: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return "; ".join(self.target_names)

    def target_completeness(self, k: int) -> dict[str, Any]:
        """Target k's completeness ``gap``, ``steps``, gradient ``evaluations`` and ``met`` (each
        None where not recorded)."""
        c = self.completeness or {}
        steps = c.get("steps") or [c.get("n_steps")] * len(c.get("gap") or [])
        parts = {"gap": c.get("gap") or [], "steps": steps, "evaluations": c.get("evaluations") or [],
                 "met": c.get("met") or []}
        return {key: v[k] if k < len(v) else None for key, v in parts.items()}

    def gap(self) -> float:
        """Largest relative completeness gap over this example's targets (NaN when not computed)."""
        if not self.completeness:
            return float("nan")
        gaps = [g for g in self.completeness.get("gap", []) if g is not None and not math.isnan(g)]
        return max(gaps) if gaps else float("nan")


@dataclass
class Attributions:
    """One method's attributions for a list of inputs."""

    method: str
    layout: str
    examples: list[ExampleAttribution]
    model: str = ""
    kind: str = ""
    target: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None
    heads: list[int] | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown attribution layout {self.layout!r}; use one of {LAYOUTS}")

    # -- convenience --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> ExampleAttribution:
        return self.examples[i]

    def __iter__(self) -> Iterator[ExampleAttribution]:
        return iter(self.examples)

    def completeness_gaps(self) -> np.ndarray:
        """Relative IG completeness gap of every (example, target) (empty when not computed)."""
        gaps: list[float] = []
        for e in self.examples:
            if e.completeness:
                gaps += [float("nan") if g is None else float(g) for g in e.completeness["gap"]]
        return np.asarray(gaps, dtype=np.float64)

    # -- notebook and terminal views (inseq's ``show``) ---------------------------------------
    def _repr_html_(self) -> str:
        """Jupyter's rich display: the escaped heat map of :func:`audit.explain.render.html_report`,
        as a block whose CSS stays inside it."""
        from audit.explain.render import html_report

        return html_report([self], title=f"{self.method} attributions", page=False)

    def __str__(self) -> str:
        """The token table of :func:`audit.explain.render.token_table` (``print(attributions)``)."""
        from audit.explain.render import token_table

        return token_table(self)

    def show(self) -> None:
        """inseq's ``show``: the heat map in a Jupyter kernel, else the token table (``str(self)``)
        on standard output; displaying is this method's whole job."""
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
        except ImportError:
            get_ipython = None  # type: ignore[assignment]
        shell = get_ipython() if get_ipython is not None else None
        if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":  # a Jupyter kernel
            display(HTML(self._repr_html_()))
        else:
            sys.stdout.write(f"{self}\n")

    # -- the long table -----------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The long table of the run-directory contract (one row per score)."""
        parts: list[pd.DataFrame] = []

        def part(e: ExampleAttribution, **cols: Any) -> pd.DataFrame:
            """One block of rows of ``e``; columns not given are empty (a matrix has no target)."""
            return pd.DataFrame({"example": e.index, "text": e.text, "method": self.method, "target": "",
                                 "token": "",  # nosec B105  # a vocabulary token, no secret
                                 "layer": np.nan, "head": np.nan, "source_index": np.nan, "target_index": np.nan,
                                 **cols})

        for e in self.examples:
            tokens = np.asarray(e.tokens, dtype=object)
            if e.token_scores is not None:
                k_n, t_n = e.token_scores.shape
                kgrid, igrid = np.meshgrid(np.arange(k_n), np.arange(t_n), indexing="ij")
                kk, ii = kgrid.ravel(), igrid.ravel()
                sc = e.token_scores.ravel()
                keep = ~np.isnan(sc)
                tpos = (np.asarray(e.target_positions, dtype=float)[kk[keep]] if e.target_positions is not None
                        else np.full(int(keep.sum()), np.nan))
                parts.append(part(e, target=np.asarray(e.target_names, dtype=object)[kk[keep]], token_index=ii[keep],
                                  token=tokens[ii[keep]], score=sc[keep], target_index=tpos))
            if self.layout == "attention":
                lay = np.asarray(self.layers if self.layers is not None else range(e.scores.shape[0]))
                hea = np.asarray(self.heads if self.heads is not None else range(e.scores.shape[1]))
                li, hi, qi, si = (a.ravel() for a in np.indices(e.scores.shape))
                parts.append(part(e, token_index=qi, token=tokens[qi], score=e.scores.ravel(), layer=lay[li],
                                  head=hea[hi], source_index=si))
            elif self.layout == "matrix":
                qi, si = (a.ravel() for a in np.indices(e.scores.shape))
                parts.append(part(e, token_index=qi, token=tokens[qi], score=e.scores.ravel(), source_index=si))
            elif self.layout == "heads":
                li, hi = (a.ravel() for a in np.indices(e.scores.shape))
                parts.append(part(e, target=e.target, token_index=np.nan, score=e.scores.ravel(), layer=li, head=hi))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS})
        df = pd.concat(parts, ignore_index=True)[FRAME_COLUMNS]
        return df.astype({**dict.fromkeys(_INT_COLUMNS, "Int64"), "example": "int64", "score": "float64"})

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` file (arrays + JSON metadata; no pickle)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**{k: v for k, v in asdict(self).items() if k != "examples"},
                "examples": [{k: v for k, v in asdict(e).items() if k not in {"scores", "token_scores", "attributable"}}
                             for e in self.examples]}
        arrays: dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(meta, default=_json_default))}
        for i, e in enumerate(self.examples):
            arrays[f"scores_{i}"] = np.asarray(e.scores)
            arrays[f"attributable_{i}"] = np.asarray(e.attributable, dtype=bool)
            if e.token_scores is not None:
                arrays[f"token_scores_{i}"] = np.asarray(e.token_scores)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Attributions:
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            examples = []
            for i, d in enumerate(meta.pop("examples")):
                ts = z[f"token_scores_{i}"] if f"token_scores_{i}" in z.files else None
                examples.append(ExampleAttribution(scores=z[f"scores_{i}"], token_scores=ts,
                                                   attributable=z[f"attributable_{i}"], **d))
        return cls(examples=examples, **meta)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)
