"""Gaussian mixtures diffused by a variance-preserving schedule, with exact scores.

A mixture ``sum_k w_k N(mu_k, diag(v_k))`` diffused to ``x_t = alpha x + sigma eps`` is
again a mixture, ``sum_k w_k N(alpha mu_k, diag(alpha^2 v_k + sigma^2))``, so its log
density, score and noise prediction ``eps_hat(x_t) = -sigma grad log p_t(x_t)`` (Eq. 2)
are exact. A conditional mixture is a subset of the components (weights renormalised),
given per point as a boolean ``mask`` over the components, so one batch can hold points
with different conditions (the digits toy: one class per point).
"""

from __future__ import annotations

import numpy as np

UNDERFLOW = -745.2  # exp(x) is exactly 0 in float64 below this
DENSE_EXP_SIZE = 4096  # smaller arrays: a plain exp (the mask costs more than it saves)


def _exp_shifted(logj):
    """``exp(logj)`` for max-shifted log weights (every entry <= 0), in place where it can.

    With many components most entries of a small-t row underflow, and exp's underflow path
    is 3-4x slower than its normal one (measured here): those entries are set to 0 (what exp
    gives them) without calling it. Bit for bit ``np.exp(logj)``.
    """
    if logj.size < DENSE_EXP_SIZE:
        return np.exp(logj, out=logj)
    keep = logj > UNDERFLOW
    if np.count_nonzero(keep) > 0.6 * keep.size:
        return np.exp(logj, out=logj)
    return np.exp(logj, out=np.zeros_like(logj), where=keep)


def _per_point(v, n):
    """A scalar or ``[n]`` value as ``[n]`` float64 (a view where it can; ``np.broadcast_to``
    cost more than the arithmetic in the small-batch loops)."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape == (n,):
        return v
    return np.full(n, float(v)) if v.size == 1 else np.broadcast_to(v, (n,))


def _logsumexp(a, axis=-1):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)


class GaussianMixture:
    """A Gaussian mixture in ``d`` dimensions with isotropic or diagonal covariances.

    Args:
        weights: ``[K]`` positive weights (renormalised to sum to 1).
        means: ``[K, d]`` component means.
        variances: a scalar (one isotropic variance for all), ``[K]`` (isotropic per
            component) or ``[K, d]`` (diagonal per component); all positive.

    Raises:
        ValueError: shapes that do not match, or non-positive weights or variances.
    """

    CHUNK_ELEMENTS = 1 << 16  # points x components per pass in eps_hat_pair

    def __init__(self, weights, means, variances):
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2:
            raise ValueError(f"means: expected a [K, d] array, got shape {means.shape}")
        K, d = means.shape
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (K,) or np.any(~(weights > 0)):
            raise ValueError(f"weights: expected {K} positive values, got shape {weights.shape}, min {weights.min()}")
        variances = np.asarray(variances, dtype=np.float64)
        if variances.ndim == 0:
            variances = np.full(K, float(variances))
        if variances.shape not in ((K,), (K, d)) or np.any(~(variances > 0)):
            raise ValueError(
                f"variances: expected a positive scalar, [{K}] or [{K}, {d}] array, "
                f"got shape {variances.shape}, min {variances.min()}"
            )
        self.weights = weights / weights.sum()
        self._log_weights = np.log(self.weights)
        self.means = means
        self.variances = variances
        self.isotropic = variances.ndim == 1
        # one variance for all components: var_k(t) is a per-point scalar (the digits toy)
        self._shared_var = float(variances[0]) if self.isotropic and np.all(variances == variances[0]) else None
        self._mean_sq = np.sum(means * means, axis=1)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def subset(self, components) -> GaussianMixture:
        """The mixture of the given components (indices or a boolean mask), weights renormalised."""
        idx = np.arange(self.num_components)[np.asarray(components)]
        if idx.size == 0:
            raise ValueError("components: expected at least one component, got none")
        return GaussianMixture(self.weights[idx], self.means[idx], self.variances[idx])

    def sample(self, n, rng):
        """``n`` draws ``[n, d]`` and their component indices ``[n]``."""
        k = rng.choice(self.num_components, size=n, p=self.weights)
        std = np.sqrt(self.variances[k])
        std = std[:, None] if self.isotropic else std
        return self.means[k] + std * rng.standard_normal((n, self.dim)), k

    # --- exact diffused quantities -------------------------------------------------------

    def _component_terms(self, x, alpha, sigma):
        """Per-component log N(x; alpha mu_k, var_k(t)) ``[N, K]`` and what the score needs."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected points [N, {self.dim}], got shape {x.shape}")
        a = _per_point(alpha, x.shape[0])[:, None]
        s = _per_point(sigma, x.shape[0])[:, None]
        if self.isotropic:
            v = self.variances[None, :] if self._shared_var is None else self._shared_var
            var = a**2 * v + s**2  # [N, K], or [N, 1] with a shared variance
            # sum(x^2) - 2 a x.mu + a^2 |mu|^2, then -(sq / var + d log(2 pi var)) / 2, in place on
            # the [N, K] product (the same operations in the same order as out of place, without
            # allocating a temporary per operation: the digits' [N, 1797] arrays are 2 MB each)
            sq = x @ self.means.T
            np.multiply(2.0 * a, sq, out=sq)
            np.subtract(np.sum(x * x, axis=1, keepdims=True), sq, out=sq)
            sq += a**2 * self._mean_sq
            np.maximum(sq, 0.0, out=sq)
            np.divide(sq, var, out=sq)
            sq += self.dim * np.log(2.0 * np.pi * var)
            logn = np.multiply(-0.5, sq, out=sq)
        else:
            var = a[:, :, None] ** 2 * self.variances[None] + s[:, :, None] ** 2  # [N, K, d]
            diff = x[:, None, :] - a[:, :, None] * self.means[None]
            logn = -0.5 * np.sum(diff * diff / var + np.log(2.0 * np.pi * var), axis=2)
        return logn, a, var

    def log_weights(self, mask=None, n=1):
        """Log mixture weights ``[n, K]``: all components (``mask=None``) or, per point, the
        True components of ``mask`` (``[K]`` or ``[n, K]`` booleans) renormalised, -inf elsewhere.

        A float ``[n, K]`` array passes through unchanged, so a caller evaluating the same
        conditions many times (an optimisation loop) computes them once and passes them as
        ``mask`` to ``log_prob``, ``score``, ``eps_hat`` and ``eps_hat_pair``.
        """
        if mask is not None and np.asarray(mask).dtype.kind == "f":
            return np.broadcast_to(mask, (n, self.num_components))
        logw = np.broadcast_to(self._log_weights, (n, self.num_components))
        if mask is None:
            return logw
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), (n, self.num_components))
        if not np.all(mask.any(axis=1)):
            raise ValueError("mask: expected at least one True component per point, got an empty row")
        logw = np.where(mask, logw, -np.inf)
        return logw - _logsumexp(logw, axis=1)[:, None]

    def _score_from(self, x, logn, a, var, logw, cols=None):
        """``(log p_t(x), score)`` from the component terms; ``cols``: only these components
        (the others must have zero weight in ``logw``, which then holds just these columns)."""
        means = self.means if cols is None else self.means[cols]
        if cols is not None and self._shared_var is None:
            var = var[:, cols]
        logj = logw + logn
        m = np.max(logj, axis=1, keepdims=True)  # finite: every row has a component
        e = _exp_shifted(np.subtract(logj, m, out=logj))  # unnormalised responsibilities
        total = e.sum(axis=1, keepdims=True)
        logp = np.log(total[:, 0]) + m[:, 0]
        if self._shared_var is not None:
            score = (a * (e @ means) / total - x) / var
        elif self.isotropic:
            rv = e / (total * var)
            score = a * (rv @ means) - x * rv.sum(axis=1, keepdims=True)
        else:
            resp = e / total
            score = np.sum(resp[:, :, None] * (a[:, :, None] * means[None] - x[:, None, :]) / var, axis=1)
        return logp, score

    def log_prob(self, x, alpha=1.0, sigma=0.0, mask=None):
        """``log p_t(x)`` of the diffused mixture, ``[N]``.

        Args:
            x: ``[N, d]`` points.
            alpha, sigma: the signal and noise scales, scalars or ``[N]``; ``(1, 0)`` is the
                data density itself.
            mask: optional ``[K]`` or ``[N, K]`` booleans: the conditional mixture of the
                True components (weights renormalised), per point; or the ``[N, K]`` float
                output of ``log_weights`` for the same.
        """
        x = np.asarray(x, dtype=np.float64)
        logn, _, _ = self._component_terms(x, alpha, sigma)
        return _logsumexp(self.log_weights(mask, x.shape[0]) + logn, axis=1)

    def score(self, x, alpha=1.0, sigma=0.0, mask=None):
        """``grad_x log p_t(x)``, ``[N, d]`` (same arguments as ``log_prob``)."""
        x = np.asarray(x, dtype=np.float64)
        logn, a, var = self._component_terms(x, alpha, sigma)
        return self._score_from(x, logn, a, var, self.log_weights(mask, x.shape[0]))[1]

    def eps_hat(self, x, alpha, sigma, mask=None):
        """The exact noise prediction ``-sigma grad log p_t(x)`` (Eq. 2), ``[N, d]``."""
        s = _per_point(sigma, np.shape(x)[0])[:, None]
        return -s * self.score(x, alpha, sigma, mask)

    def eps_hat_pair(self, x, alpha, sigma, mask):
        """``(eps_cond, eps_uncond)`` at the same points from one pass over the components.

        Rows are processed in chunks of about ``CHUNK_ELEMENTS / K`` points so that the
        ``[chunk, K]`` temporaries stay in cache (measured ~10x faster for the digits'
        1797 components than one pass over 160 points on this machine). With many
        components (``K >= GROUP_MIN_COMPONENTS``) rows with the same condition are chunked
        together and their conditional branch reads only that condition's components (the
        others have weight 0): the digits' class branch reads 1/10 of the images.

        Args:
            x: ``[N, d]`` noisy points ``x_t``.
            alpha, sigma: scalars or ``[N]``.
            mask: ``[K]`` or ``[N, K]`` booleans selecting the conditional components, or
                the float ``[N, K]`` output of ``log_weights``.
        """
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        a, s = _per_point(alpha, n), _per_point(sigma, n)
        logw_c = self.log_weights(mask, n)
        logw_u = self.log_weights(None, n)
        eps_c, eps_u = np.empty_like(x), np.empty_like(x)
        step = max(1, self.CHUNK_ELEMENTS // self.num_components)
        groups = self._condition_groups(mask, logw_c)
        if self._shared_var is not None and len(groups) > 1:
            return self._shared_pair(x, a[:, None], s[:, None], logw_c, logw_u, groups)
        for rows, cols in groups:
            count = n if rows is None else len(rows)
            for lo in range(0, count, step):
                r = slice(lo, lo + step) if rows is None else rows[lo:lo + step]
                logn, a_c, var = self._component_terms(x[r], a[r], s[r])
                wc = logw_c[r] if cols is None else logw_c[r][:, cols]
                eps_c[r] = -s[r, None] * self._score_from(x[r], logn if cols is None else logn[:, cols], a_c, var, wc,
                                                          cols)[1]  # fmt: skip
                eps_u[r] = -s[r, None] * self._score_from(x[r], logn, a_c, var, logw_u[r])[1]
        return eps_c, eps_u

    GROUP_MIN_COMPONENTS = 64

    def _shared_pair(self, x, a, s, logw_c, logw_u, groups):
        """``eps_hat_pair`` for a shared-variance mixture with many components: the
        responsibilities from ``a x.mu_k / var - a^2 |mu_k|^2 / (2 var)`` alone (the terms of
        log N that are the same for every component cancel), one pass over all rows for the
        unconditional branch, one per condition (its components only) for the conditional one."""
        var = a * a * self._shared_var + s * s  # [n, 1]
        logits = x @ self.means.T
        logits *= a / var
        logits -= (a * a / (2.0 * var)) * self._mean_sq

        def eps(r, logw, cols):
            logj = logits[r] + logw if cols is None else logits[r][:, cols] + logw[:, cols]
            logj -= logj.max(axis=1, keepdims=True)
            e = _exp_shifted(logj)
            means = self.means if cols is None else self.means[cols]
            return -s[r] * ((a[r] * (e @ means) / e.sum(axis=1, keepdims=True) - x[r]) / var[r])

        eps_c = np.empty_like(x)
        for rows, cols in groups:
            eps_c[rows] = eps(rows, logw_c[rows], cols)
        return eps_c, eps(slice(None), logw_u, None)

    def _condition_groups(self, mask, logw_c):
        """``[(rows, cols)]``: the row indices of one condition and its components (``rows``
        None: every row; ``cols`` None: every component).
        Cached for the last ``mask`` object (an optimisation loop passes the same one)."""
        n = logw_c.shape[0]
        if self.num_components < self.GROUP_MIN_COMPONENTS:
            return [(None, None)]
        cached = getattr(self, "_groups_for", None)
        if cached is not None and cached[0] is mask and cached[1] == n:
            return cached[2]
        finite = np.isfinite(logw_c)
        keys = np.packbits(finite, axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        groups = []
        for g, row in enumerate(first):
            cols = np.flatnonzero(finite[row])
            groups.append((np.flatnonzero(inverse.ravel() == g), None if cols.size == self.num_components else cols))
        self._groups_for = (mask, n, groups)
        return groups


def paper_mixture():
    """The mixture of Sec. 13: ``0.2 N([0,0], 0.1 I) + 0.4 N([1,1], 0.05 I) + 0.4 N([2,1], 0.05 I)``.

    Returns:
        ``(mixture, cond_mask)``: the unconditional mixture and the boolean mask of the
        conditional components ``[1,1]`` and ``[2,1]`` (the singular mode is ``[0,0]``).
    """
    mixture = GaussianMixture([0.2, 0.4, 0.4], [[0.0, 0.0], [1.0, 1.0], [2.0, 1.0]], [0.1, 0.05, 0.05])
    return mixture, np.array([False, True, True])
