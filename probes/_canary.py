"""Canary exposure (Carlini et al. 2019, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks", USENIX Security).

A canary is a format with holes, ``"my PIN is {d4}"``, and the secret that filled them when it was
planted in training data, ``"7281"``. The candidate space R holds every filling of the holes;
the model ranks the true secret's filled sentence by log-perplexity ``Px(s) = −log₂ P(s)`` among
all of them, and

    exposure = log₂|R| − log₂ rank(secret)

(§4.1). Exposure is 0 ≤ exposure ≤ log₂|R|: a model that never saw the canary puts the secret at a
random rank (expected exposure about log₂ e ≈ 1.44 for a large space); a model that memorised it
ranks it first (exposure log₂|R|).

When |R| is small every candidate is scored (rank exact). When it is large, ``n_samples``
candidates are drawn uniformly and the distribution of their log-perplexities is fitted with a
skew-normal (the paper's extrapolation, §4.3); then ``exposure ≈ −log₂ F(Px(secret))`` with F the
fitted CDF. The fit here is by the method of moments (closed form), so a bootstrap over the
sampled candidates gives the estimate's 95 % interval cheaply.

Holes: ``{dN}`` N decimal digits, ``{aN}`` N lowercase ASCII letters, ``{xN}`` N hexadecimal
digits. The secret is the concatenation of the hole fillings (``"card {d4} {d4}"`` with secret
``"12345678"``).
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

ALPHABETS = {"d": string.digits, "a": string.ascii_lowercase, "x": string.digits + "abcdef"}
HOLE = re.compile(r"\{([dax])(\d+)\}")


class CanaryError(ValueError):
    """A canary format or secret that cannot be ranked."""


@dataclass(frozen=True)
class CanaryFormat:
    """A parsed format: the literal pieces around the holes, each hole's length, and one alphabet
    per character of the secret."""

    pieces: tuple[str, ...]
    lengths: tuple[int, ...]
    alphabets: tuple[str, ...]

    @classmethod
    def parse(cls, fmt: str) -> CanaryFormat:
        pieces: list[str] = []
        lengths: list[int] = []
        alphabets: list[str] = []
        pos = 0
        for m in HOLE.finditer(fmt):
            n = int(m.group(2))
            if n < 1:
                raise CanaryError(f"hole {m.group(0)!r} in format {fmt!r} must have at least one character")
            pieces.append(fmt[pos:m.start()])
            lengths.append(n)
            alphabets += [ALPHABETS[m.group(1)]] * n
            pos = m.end()
        pieces.append(fmt[pos:])
        if not lengths:
            raise CanaryError(f"format {fmt!r} has no hole; use {{dN}} (digits), {{aN}} (letters) or {{xN}} (hex)")
        if any("{" in p for p in pieces):
            raise CanaryError(f"format {fmt!r}: unknown hole; use {{dN}} (digits), {{aN}} (letters) or {{xN}} (hex)")
        return cls(tuple(pieces), tuple(lengths), tuple(alphabets))

    @property
    def log2_space(self) -> float:
        """log₂|R|."""
        return float(sum(math.log2(len(a)) for a in self.alphabets))

    @property
    def space(self) -> int:
        """|R|."""
        return math.prod(len(a) for a in self.alphabets)

    def check(self, secret: str) -> None:
        al = self.alphabets
        if len(secret) != len(al):
            raise CanaryError(f"secret {secret!r} has {len(secret)} characters; the format's holes take {len(al)}")
        bad = next((i for i, (c, a) in enumerate(zip(secret, al, strict=True)) if c not in a), None)
        if bad is not None:
            raise CanaryError(f"secret {secret!r}: character {bad + 1} ({secret[bad]!r}) is not one of {al[bad]!r}")

    def fill(self, secret: str) -> str:
        out, pos = [self.pieces[0]], 0
        for n, piece in zip(self.lengths, self.pieces[1:], strict=True):
            out += [secret[pos:pos + n], piece]
            pos += n
        return "".join(out)

    def enumerate(self) -> list[str]:
        """Every secret of the space, in mixed-radix order."""
        return ["".join(c) for c in itertools.product(*self.alphabets)]

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` secrets drawn uniformly from the space (each character independently)."""
        cols = [np.asarray(list(a))[rng.integers(0, len(a), size=n)] for a in self.alphabets]
        return ["".join(c) for c in zip(*cols, strict=True)]


def skewnorm_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skew-normal (shape a, location, scale) matching the mean, variance and skewness of each row
    of ``x`` (method of moments; the sample skewness is clipped to the family's range |γ| < 0.99).
    A 1-D ``x`` is one row."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    m, s = x.mean(1), x.std(1, ddof=1)
    g = np.clip(np.nan_to_num(st.skew(x, axis=1, bias=False)), -0.99, 0.99)
    c = np.abs(g) ** (2 / 3)
    delta = np.sign(g) * np.sqrt(math.pi / 2 * c / (c + ((4 - math.pi) / 2) ** (2 / 3)))
    scale = np.maximum(s / np.sqrt(1 - 2 * delta**2 / math.pi), 1e-12)
    loc = m - scale * delta * math.sqrt(2 / math.pi)
    return delta / np.sqrt(1 - delta**2), loc, scale


def extrapolated_exposure(secret_ppl: float, sampled_ppl: np.ndarray) -> np.ndarray:
    """−log₂ F(Px(secret)) with F the skew-normal fitted to the sampled candidates' log-perplexities
    (one value per row of ``sampled_ppl``)."""
    a, loc, scale = skewnorm_moments(sampled_ppl)
    return np.asarray(-st.skewnorm.logcdf(secret_ppl, a, loc, scale) / math.log(2))


@dataclass
class Exposure:
    """One canary's exposure and how it was obtained."""

    exposure: float
    ci_low: float
    ci_high: float
    rank: float  # exact when enumerated; |R|·2^−exposure when extrapolated
    log2_space: float
    method: str
    n_scored: int
    secret_log_perplexity: float


def exposure(
    fmt: str, secret: str, score: Callable[[list[str]], np.ndarray], *, max_enumerate: int = 10_000,
    n_samples: int = 2_000, seed: int = 0, batch: int = 4096, n_boot: int = 1000,
) -> Exposure:
    """The exposure of ``secret`` in ``fmt``; ``score(texts)`` returns each text's log-perplexity
    in bits (−log₂ P). Candidates are enumerated when |R| ≤ ``max_enumerate``, else ``n_samples``
    are drawn uniformly (with replacement, secret excluded) and extrapolated."""
    cf = CanaryFormat.parse(fmt)
    cf.check(secret)
    secret_ppl = float(score([cf.fill(secret)])[0])
    log2_r = cf.log2_space
    if cf.space <= max_enumerate:
        ppl = _score_all(cf, [s for s in cf.enumerate() if s != secret], score, batch)
        rank = 1 + int(np.sum(ppl < secret_ppl))
        e = log2_r - math.log2(rank)
        return Exposure(e, e, e, float(rank), log2_r, "enumerated", len(ppl) + 1, secret_ppl)
    rng = np.random.default_rng(seed)
    ppl = _score_all(cf, [s for s in cf.sample(n_samples, rng) if s != secret], score, batch)
    e = min(float(extrapolated_exposure(secret_ppl, ppl)[0]), log2_r)
    boot = extrapolated_exposure(secret_ppl, ppl[rng.integers(0, len(ppl), (n_boot, len(ppl)))])
    lo, hi = np.quantile(np.minimum(boot, log2_r), [0.025, 0.975])
    return Exposure(e, float(lo), float(hi), float(2 ** (log2_r - e)), log2_r,
                    "sampled, skew-normal extrapolation (Carlini et al. 2019 §4.3)", len(ppl) + 1, secret_ppl)


def _score_all(cf: CanaryFormat, secrets: Sequence[str], score: Callable[[list[str]], np.ndarray],
               batch: int) -> np.ndarray:
    out = [np.asarray(score([cf.fill(s) for s in secrets[i:i + batch]]), dtype=np.float64)
           for i in range(0, len(secrets), batch)]
    return np.concatenate(out) if out else np.zeros(0)
