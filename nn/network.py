"""Multilayer perceptrons over one flat parameter buffer (Goodfellow et al., ch. 6–7; SPEC §9).

A ``Network`` owns one contiguous array ``params`` of one dtype and one ``grads`` array of the
same shape; layers are views at fixed offsets. All weight matrices come first, so the
weights that the penalties act on are the prefix ``params[..., :n_weights]`` and an
optimizer updates everything in a few whole-buffer operations.

Each layer's forward rule and backward rule sit together below. Shapes: X is (n, d), or
(R, n, d) when ``replicas=R`` stacks R independent networks on a leading axis (the batched
replicas of a comparison); W is (in, out); biases and per-unit vectors are (1, out).

Hessian–vector products use the complex step: for an objective f analytic in θ,
H v = Im ∇f(θ + i·h·v) / h up to O(h²), with no subtractive cancellation, so a tiny h gives
the exact product to rounding. Every layer compares only real parts, which keeps the rules
valid on complex arrays; rectifier kinks have measure zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from .activations import ACTIVATIONS, prelu, prelu_backward
from .backend import array_module, to_numpy
from .initializers import INITIALIZERS
from .losses import OUTPUTS

Array = Any

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # running = (1 − 0.1)·running + 0.1·batch, as torch.nn.BatchNorm1d


@dataclass(frozen=True)
class Architecture:
    """What a network is, independent of its parameter values."""

    n_in: int
    hidden: tuple[int, ...]
    n_out: int
    activations: tuple[str, ...]  # one per hidden layer: a name of ACTIVATIONS, or "prelu"
    output: str  # softmax | sigmoid | linear
    batch_norm: bool = False
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0

    def __post_init__(self) -> None:
        if len(self.activations) != len(self.hidden):
            raise ValueError("one activation per hidden layer is needed")
        for a in self.activations:
            if a not in ACTIVATIONS and a != "prelu":
                raise ValueError(f"unknown activation {a!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.n_in, *self.hidden, self.n_out)


@dataclass(frozen=True)
class Slot:
    """One named array inside the flat buffer."""

    name: str
    shape: tuple[int, ...]
    offset: int
    role: str  # weight | bias | bn_scale | bn_shift | prelu

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def layout(arch: Architecture) -> tuple[list[Slot], int, int]:
    """Return (slots, n_weights, size): all weights first, then biases and per-unit vectors."""
    sizes = arch.sizes
    slots: list[Slot] = []
    offset = 0

    def add(name: str, shape: tuple[int, ...], role: str) -> None:
        nonlocal offset
        slots.append(Slot(name, shape, offset, role))
        offset += int(np.prod(shape))

    for i in range(len(sizes) - 1):
        add(f"W{i}", (sizes[i], sizes[i + 1]), "weight")
    n_weights = offset
    for i in range(len(sizes) - 1):
        hidden = i < len(arch.hidden)
        if hidden and arch.batch_norm:
            # batch norm's shift β replaces the preceding layer's bias
            add(f"gamma{i}", (1, sizes[i + 1]), "bn_scale")
            add(f"beta{i}", (1, sizes[i + 1]), "bn_shift")
        else:
            add(f"b{i}", (1, sizes[i + 1]), "bias")
        if hidden and arch.activations[i] == "prelu":
            add(f"alpha{i}", (1, sizes[i + 1]), "prelu")
    return slots, n_weights, offset


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass."""

    inputs: list[Array] = field(default_factory=list)  # input of each dense layer
    pre: list[Array] = field(default_factory=list)  # dense output (before bn/activation)
    bn: list[tuple[Array, Array] | None] = field(default_factory=list)  # (x̂, 1/σ)
    bn_stats: list[tuple[Array, Array] | None] = field(default_factory=list)  # batch (μ, σ²)
    act_in: list[Array] = field(default_factory=list)  # activation input
    act_out: list[Array] = field(default_factory=list)
    masks: list[Array | None] = field(default_factory=list)  # dropout masks, scaled
    input_mask: Array | None = None


class Network:
    """An MLP whose parameters live in one flat buffer (optionally R stacked replicas)."""

    def __init__(
        self,
        arch: Architecture,
        *,
        dtype: str = "float32",
        xp: ModuleType = np,
        replicas: int | None = None,
    ) -> None:
        self.arch = arch
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self.replicas = replicas
        self.slots, self.n_weights, self.size = layout(arch)
        self._slot = {s.name: s for s in self.slots}
        lead = (replicas,) if replicas else ()
        self.params = xp.zeros((*lead, self.size), dtype=self.dtype)
        self.grads = xp.zeros_like(self.params)
        n_bn = sum(arch.hidden) if arch.batch_norm else 0
        # batch norm running statistics: [means..., variances...]; state, not parameters
        self.running = xp.zeros((*lead, 2 * n_bn), dtype=self.dtype)
        if n_bn:
            self.running[..., n_bn:] = 1.0
        self.output = OUTPUTS[arch.output]

    # ----------------------------------------------------------------- views
    def view(self, flat: Array, name: str) -> Array:
        """The array ``name`` as a view into ``flat`` (params, grads, or a direction)."""
        s = self._slot[name]
        lead = flat.shape[:-1]
        return flat[..., s.offset : s.offset + s.size].reshape(*lead, *s.shape)

    def running_view(self, i: int) -> tuple[Array, Array]:
        """(mean, var) running statistics of hidden layer ``i``, as (…, 1, h) views."""
        h = self.arch.hidden
        start = sum(h[:i])
        n = sum(h)
        lead = self.running.shape[:-1]
        mean = self.running[..., start : start + h[i]].reshape(*lead, 1, h[i])
        var = self.running[..., n + start : n + start + h[i]].reshape(*lead, 1, h[i])
        return mean, var

    @property
    def n_layers(self) -> int:
        return len(self.arch.hidden) + 1

    # -------------------------------------------------------------- forward
    def forward(
        self,
        X: Array,
        *,
        train: bool = False,
        rng: Any = None,
        params: Array | None = None,
        update_running: bool = False,
        dropout: bool = True,
    ) -> tuple[Array, Cache]:
        """Return the output pre-activations z and the cache for ``backward``.

        ``train`` uses batch statistics and dropout (``rng``: an ``xp.random.RandomState``);
        otherwise running statistics and no dropout (inverted dropout keeps the expected
        input of each unit the same in both modes). ``dropout=False`` keeps batch
        statistics but switches dropout off (a deterministic training-mode objective).
        """
        p = self.params if params is None else params
        arch = self.arch
        cache = Cache()
        h = X
        if train and dropout and arch.dropout_input > 0:
            cache.input_mask = self._mask(h.shape, arch.dropout_input, rng)
            h = h * cache.input_mask
        for i in range(self.n_layers):
            W = self.view(p, f"W{i}")
            cache.inputs.append(h)
            z = h @ W
            hidden = i < len(arch.hidden)
            if hidden and arch.batch_norm:
                cache.pre.append(z)
                z = self._bn_forward(p, i, z, train, cache, update_running)
            else:
                z = z + self.view(p, f"b{i}")
                cache.pre.append(z)
                cache.bn.append(None)
                cache.bn_stats.append(None)
            if not hidden:
                return z, cache
            cache.act_in.append(z)
            name = arch.activations[i]
            if name == "prelu":
                a = prelu(z, self.view(p, f"alpha{i}"))
            else:
                a = ACTIVATIONS[name].forward(z)
            cache.act_out.append(a)
            if train and dropout and arch.dropout_hidden > 0:
                m = self._mask(a.shape, arch.dropout_hidden, rng)
                cache.masks.append(m)
                a = a * m
            else:
                cache.masks.append(None)
            h = a
        raise AssertionError("unreachable")  # pragma: no cover

    def _mask(self, shape: tuple[int, ...], p_drop: float, rng: Any) -> Array:
        # inverted dropout: keep with probability 1 − p, scale kept units by 1/(1 − p)
        keep = rng.random_sample(shape) >= p_drop
        return keep.astype(self.dtype) / (1.0 - p_drop)

    def _bn_forward(
        self, p: Array, i: int, z: Array, train: bool, cache: Cache, update_running: bool
    ) -> Array:
        xp = self.xp
        gamma, beta = self.view(p, f"gamma{i}"), self.view(p, f"beta{i}")
        if train:
            mu = z.mean(axis=-2, keepdims=True)  # μ_B
            d = z - mu
            var = (d * d).mean(axis=-2, keepdims=True)  # σ²_B (biased, used to normalize)
            if update_running:
                rm, rv = self.running_view(i)
                n = z.shape[-2]
                rm *= 1 - BN_MOMENTUM
                rm += BN_MOMENTUM * mu.real
                rv *= 1 - BN_MOMENTUM
                rv += BN_MOMENTUM * var.real * (n / max(n - 1, 1))  # unbiased, as torch
            cache.bn_stats.append((mu, var))
        else:
            mu, var = self.running_view(i)
            d = z - mu
            cache.bn_stats.append(None)
        inv = 1 / xp.sqrt(var + BN_EPS)
        xhat = d * inv  # x̂ = (z − μ)/√(σ² + ε)
        cache.bn.append((xhat, inv))
        return gamma * xhat + beta  # γ x̂ + β

    # ------------------------------------------------------------- backward
    def backward(self, cache: Cache, dz: Array, *, params: Array | None = None,
                 grads: Array | None = None) -> Array:
        """Back-propagate ∂L/∂z of the output into ``grads`` (overwritten) and return it."""
        p = self.params if params is None else params
        g = self.grads if grads is None else grads
        arch = self.arch
        for i in reversed(range(self.n_layers)):
            hidden = i < len(arch.hidden)
            if hidden:
                if cache.masks[i] is not None:
                    dz = dz * cache.masks[i]
                name = arch.activations[i]
                zin = cache.act_in[i]
                if name == "prelu":
                    dz, da = prelu_backward(zin, self.view(p, f"alpha{i}"), dz)
                    self.view(g, f"alpha{i}")[...] = da
                else:
                    dz = dz * ACTIVATIONS[name].derivative(zin, cache.act_out[i])
                if arch.batch_norm:
                    dz = self._bn_backward(p, g, i, dz, cache)
                else:
                    self.view(g, f"b{i}")[...] = dz.sum(axis=-2, keepdims=True)
            else:
                self.view(g, f"b{i}")[...] = dz.sum(axis=-2, keepdims=True)
            x = cache.inputs[i]
            W = self.view(p, f"W{i}")
            self.view(g, f"W{i}")[...] = x.swapaxes(-1, -2) @ dz  # ∂L/∂W = xᵀ δ
            if i > 0:
                dz = dz @ W.swapaxes(-1, -2)  # ∂L/∂x = δ Wᵀ
        return g

    def _bn_backward(self, p: Array, g: Array, i: int, dout: Array, cache: Cache) -> Array:
        xhat, inv = cache.bn[i]
        gamma = self.view(p, f"gamma{i}")
        self.view(g, f"gamma{i}")[...] = (dout * xhat).sum(axis=-2, keepdims=True)
        self.view(g, f"beta{i}")[...] = dout.sum(axis=-2, keepdims=True)
        dx = dout * gamma
        if cache.bn_stats[i] is None:  # running statistics are constants
            return dx * inv
        n = dout.shape[-2]
        # through μ and σ²: ∂L/∂z = (1/n)·(1/σ)·(n·∂x̂ − Σ∂x̂ − x̂·Σ(∂x̂·x̂))
        s1 = dx.sum(axis=-2, keepdims=True)
        s2 = (dx * xhat).sum(axis=-2, keepdims=True)
        return (inv / n) * (n * dx - s1 - xhat * s2)

    # ----------------------------------------------------------- objective
    def loss(self, X: Array, y: Array, *, train: bool = False, rng: Any = None,
             params: Array | None = None) -> Array:
        """Mean data loss (no penalty), 0-d or (R,)."""
        z, _ = self.forward(X, train=train, rng=rng, params=params)
        return self.output.forward(z, y)

    def loss_and_grad(
        self,
        X: Array,
        y: Array,
        *,
        train: bool = True,
        rng: Any = None,
        params: Array | None = None,
        grads: Array | None = None,
        update_running: bool = False,
    ) -> Array:
        """Data loss; its gradient is written into ``grads`` (default ``self.grads``)."""
        z, cache = self.forward(X, train=train, rng=rng, params=params,
                                update_running=update_running)
        loss = self.output.forward(z, y)
        self.backward(cache, self.output.gradient(z, y), params=params, grads=grads)
        return loss

    def predict(self, X: Array, params: Array | None = None) -> Array:
        """Output-unit values (probabilities, or the regression output), inference mode."""
        z, _ = self.forward(X, train=False, params=params)
        return self.output.link(z)

    # --------------------------------------------------------- host access
    def arrays(self) -> dict[str, np.ndarray]:
        """Every named array on the host, biases as 1-D vectors, batch-norm statistics too."""
        out: dict[str, np.ndarray] = {}
        for s in self.slots:
            a = to_numpy(self.view(self.params, s.name))
            out[s.name] = a.reshape(*a.shape[:-2], a.shape[-1]) if s.shape[0] == 1 else a
        if self.arch.batch_norm:
            for i in range(len(self.arch.hidden)):
                m, v = self.running_view(i)
                out[f"running_mean{i}"] = to_numpy(m)[..., 0, :]
                out[f"running_var{i}"] = to_numpy(v)[..., 0, :]
        return out

    def set_flat(self, flat: np.ndarray, running: np.ndarray | None = None) -> None:
        """Load parameters (and batch-norm statistics) from host arrays."""
        self.params[...] = self.xp.asarray(flat, dtype=self.dtype)
        if running is not None:
            self.running[...] = self.xp.asarray(running, dtype=self.dtype)


def initial_parameters(
    arch: Architecture,
    rng: np.random.Generator,
    *,
    init: str = "glorot_uniform",
    bias_init: float = 0.0,
    output_bias: str | np.ndarray = "zeros",
    lsuv_batch: np.ndarray | None = None,
    lsuv_tol: float = 0.01,
    lsuv_max_iter: int = 10,
) -> np.ndarray:
    """Draw a flat float64 parameter vector on the host (identical on every backend).

    ``output_bias`` is ``"zeros"`` or the output bias vector itself (the caller computes the
    marginal one from training targets: see ``marginal_output_bias``). ``init="lsuv"`` needs
    ``lsuv_batch``: orthonormal weights, then each layer in turn divided by the standard
    deviation of its output on that batch until the variance is 1 within ``lsuv_tol``
    (Mishkin & Matas 2015).
    """
    net = Network(arch, dtype="float64")
    make = INITIALIZERS[init]
    for s in net.slots:
        v = net.view(net.params, s.name)
        if s.role == "weight":
            v[...] = make(s.shape[0], s.shape[1], rng)
        elif s.role == "bias":
            v[...] = bias_init
        elif s.role == "bn_scale":
            v[...] = 1.0
        elif s.role == "prelu":
            v[...] = 0.25  # He et al.'s initial slope
    last = f"b{len(arch.hidden)}"
    if not isinstance(output_bias, str):
        net.view(net.params, last)[...] = np.asarray(output_bias).reshape(1, -1)
    elif output_bias != "zeros":
        raise ValueError(f"unknown output_bias {output_bias!r}")
    if init == "lsuv":
        if lsuv_batch is None:
            raise ValueError("lsuv needs a batch of training inputs")
        _lsuv(net, np.asarray(lsuv_batch, dtype=np.float64), lsuv_tol, lsuv_max_iter)
    return net.params.copy()


def _lsuv(net: Network, X: np.ndarray, tol: float, max_iter: int) -> None:
    for i in range(net.n_layers):
        W = net.view(net.params, f"W{i}")
        for _ in range(max_iter):
            _, cache = net.forward(X, train=True)  # batch statistics, no dropout rng needed
            var = float(cache.pre[i].var())
            if abs(var - 1.0) < tol or var == 0.0:
                break
            W /= np.sqrt(var)


def marginal_output_bias(output: str, y: np.ndarray, n_out: int) -> np.ndarray:
    """The output bias whose prediction at zero input is the training marginal.

    softmax: b = log p_k (softmax(b) = class frequencies); sigmoid: b = log(p/(1 − p)) (σ(b) =
    positive rate); linear: b = mean target.
    """
    eps = 1e-12
    if output == "softmax":
        freq = np.bincount(y.astype(np.int64), minlength=n_out) / len(y)
        b = np.log(np.maximum(freq, eps))
        return b - b.mean()
    if output == "sigmoid":
        rate = np.clip(np.asarray(y, dtype=np.float64).reshape(len(y), -1).mean(axis=0), eps,
                       1 - eps)
        return np.log(rate / (1 - rate))
    return np.asarray(y, dtype=np.float64).reshape(len(y), -1).mean(axis=0)


def hvp(
    net: Network,
    X: Array,
    y: Array,
    v: Array,
    *,
    params: Array | None = None,
    h: float | None = None,
) -> Array:
    """Exact Hessian–vector product H v of the data loss, by the complex step.

    ∇f(θ + i·h·v) = ∇f(θ) + i·h·H v + O(h²), so H v = Im ∇f(θ + i·h·v)/h, free of the
    cancellation that limits finite differences. Runs in inference mode for dropout
    (a deterministic objective) and with batch statistics for batch norm.
    """
    xp = array_module(v)
    p = net.params if params is None else params
    complex_dtype = np.result_type(net.dtype, np.complex64)
    if h is None:
        h = 1e-20 if net.dtype == np.float64 else 1e-10
    pc = p.astype(complex_dtype) + 1j * h * v.astype(complex_dtype)
    gc = xp.zeros_like(pc)
    z, cache = net.forward(X.astype(complex_dtype), train=net.arch.batch_norm, params=pc,
                           dropout=False)
    net.backward(cache, net.output.gradient(z, y), params=pc, grads=gc)
    return (gc.imag / h).astype(net.dtype)
