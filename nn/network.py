"""Multilayer perceptrons over one flat parameter buffer (Goodfellow et al., ch. 6–7;
docs/architecture.md).

This module is over 500 lines because the network's layout, forward and backward passes,
initialisation and Hessian–vector product all read one flat buffer layout, and split apart
they would each need the others' offsets.

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

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from .activations import ACTIVATIONS, NAMES, prelu, prelu_backward
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
            if a not in NAMES:
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
        return math.prod(self.shape)


def layout(arch: Architecture) -> tuple[list[Slot], int, int]:
    """Return (slots, n_weights, size): all weights first, then biases and per-unit vectors."""
    sizes = arch.sizes
    slots: list[Slot] = []
    offset = 0

    def add(name: str, shape: tuple[int, ...], role: str) -> None:
        nonlocal offset
        slots.append(Slot(name, shape, offset, role))
        offset += slots[-1].size

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
    buffers: Buffers | None = None  # where backward writes, when forward reused buffers


class Buffers:
    """Arrays kept between training steps, one set per (role, shape, dtype) (docs/architecture.md).

    The training loop calls ``loss_and_grad`` on batches of one or two shapes thousands of
    times; writing every product and activation into the same arrays (``out=``) spares the
    allocator and, on the CPU, the page faults of fresh large arrays. ``get`` hands out the
    array for a role; a later call with the same role, shape and dtype returns it again,
    overwritten — so only callers that finish with a result before the next call use them.
    """

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        self.arrays: dict[tuple, Array] = {}

    def get(self, role: Any, shape: tuple[int, ...], dtype: Any) -> Array:
        key = (role, shape, np.dtype(dtype).str)
        a = self.arrays.get(key)
        if a is None:
            if len(self.arrays) > 256:  # many shapes (e.g. growing batches): start afresh
                self.arrays.clear()
            a = self.arrays[key] = self.xp.empty(shape, dtype=dtype)
        return a


def _product_shape(a: Array, b: Array) -> tuple[int, ...]:
    """Shape of ``a @ b`` with leading (replica) axes broadcast."""
    if a.ndim == 2 and b.ndim == 2:
        return (a.shape[0], b.shape[1])
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return (*lead, a.shape[-2], b.shape[-1])


def _product_dtype(a: Array, b: Array) -> Any:
    return a.dtype if a.dtype == b.dtype else np.result_type(a, b)


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
        self.buffers = Buffers(xp)
        self._cached_views: list[tuple[Array, dict[str, Array]]] = []

    # ----------------------------------------------------------------- views
    def view(self, flat: Array, name: str) -> Array:
        """The array ``name`` as a view into ``flat`` (params, grads, or a direction)."""
        s = self._slot[name]
        lead = flat.shape[:-1]
        return flat[..., s.offset : s.offset + s.size].reshape(*lead, *s.shape)

    def views(self, flat: Array) -> dict[str, Array]:
        """Every named view of ``flat``; those of ``params`` and ``grads`` are made once."""
        for base, named in self._cached_views:
            if base is flat:
                return named
        named = {s.name: self.view(flat, s.name) for s in self.slots}
        if flat is self.params or flat is self.grads:
            self._cached_views = [(b, v) for b, v in self._cached_views
                                  if b is self.params or b is self.grads]
            self._cached_views.append((flat, named))
        return named

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
        reuse: bool = False,
    ) -> tuple[Array, Cache]:
        """Return the output pre-activations z and the cache for ``backward``.

        ``train`` uses batch statistics and dropout (``rng``: an ``xp.random.RandomState``);
        otherwise running statistics and no dropout (inverted dropout keeps the expected
        input of each unit the same in both modes). ``dropout=False`` keeps batch
        statistics but switches dropout off (a deterministic training-mode objective).
        ``reuse`` writes into ``self.buffers`` (see ``Buffers``): z and the cache are then
        overwritten by the next reusing call on a batch of the same shape.
        """
        xp = self.xp
        p = self.params if params is None else params
        v = self.views(p)
        arch = self.arch
        buffers = self.buffers if reuse else None
        # in-place rectification needs real numbers (the complex step compares real parts)
        in_place = reuse and not xp.iscomplexobj(p) and not xp.iscomplexobj(X)
        cache = Cache(buffers=buffers)
        h = X
        if train and dropout and arch.dropout_input > 0:
            cache.input_mask = self._mask(h.shape, arch.dropout_input, rng)
            h = h * cache.input_mask
        for i in range(self.n_layers):
            W = v[f"W{i}"]
            cache.inputs.append(h)
            out = None
            if buffers is not None:
                out = buffers.get(("z", i), _product_shape(h, W), _product_dtype(h, W))
            z = xp.matmul(h, W, out=out)  # a fresh array, or this layer's buffer: ours
            hidden = i < len(arch.hidden)
            if hidden and arch.batch_norm:
                cache.pre.append(z)
                z = self._bn_forward(v, i, z, train, cache, update_running)
            else:
                z += v[f"b{i}"]
                cache.pre.append(z)
                cache.bn.append(None)
                cache.bn_stats.append(None)
            if not hidden:
                return z, cache
            name = arch.activations[i]
            if name == "prelu":
                cache.act_in.append(z)
                a = prelu(z, v[f"alpha{i}"])
            elif name == "relu" and in_place:
                # max(0, z) written over z: relu'(z) = [a > 0] needs only a, so a stands in
                # for z in the cache (its derivative reads the sign of its first argument)
                a = xp.maximum(z, 0, out=z)
                cache.act_in.append(a)
            else:
                cache.act_in.append(z)
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
        self, v: dict[str, Array], i: int, z: Array, train: bool, cache: Cache,
        update_running: bool,
    ) -> Array:
        xp = self.xp
        gamma, beta = v[f"gamma{i}"], v[f"beta{i}"]
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
        """Back-propagate ∂L/∂z of the output into ``grads`` (overwritten) and return it.

        ``dz`` itself is left as it is; every δ of a hidden layer is an array of this pass
        (a fresh one, or a reused buffer), so the derivative products are taken in place.
        """
        xp = self.xp
        p = self.params if params is None else params
        g = self.grads if grads is None else grads
        v, gv = self.views(p), self.views(g)
        arch = self.arch
        buffers = cache.buffers
        for i in reversed(range(self.n_layers)):
            hidden = i < len(arch.hidden)
            if hidden:
                if cache.masks[i] is not None:
                    dz *= cache.masks[i]
                name = arch.activations[i]
                zin = cache.act_in[i]
                if name == "prelu":
                    dz, da = prelu_backward(zin, v[f"alpha{i}"], dz)
                    gv[f"alpha{i}"][...] = da
                else:
                    dz *= ACTIVATIONS[name].derivative(zin, cache.act_out[i])  # δ ⊙ g'(z)
                if arch.batch_norm:
                    dz = self._bn_backward(v, gv, i, dz, cache)
                else:
                    _sum_rows(dz, gv[f"b{i}"])  # ∂L/∂b = Σ_rows δ
            else:
                _sum_rows(dz, gv[f"b{i}"])
            x = cache.inputs[i]
            W = v[f"W{i}"]
            gW = gv[f"W{i}"]
            xp.matmul(x.swapaxes(-1, -2), dz, out=gW)  # ∂L/∂W = xᵀ δ, into the gradient
            if i > 0:
                WT = W.swapaxes(-1, -2)
                out = None
                if buffers is not None:
                    out = buffers.get(("dx", i), _product_shape(dz, WT),
                                      _product_dtype(dz, WT))
                dz = xp.matmul(dz, WT, out=out)  # ∂L/∂x = δ Wᵀ
        return g

    def _bn_backward(self, v: dict[str, Array], gv: dict[str, Array], i: int, dout: Array,
                     cache: Cache) -> Array:
        xhat, inv = cache.bn[i]
        gv[f"gamma{i}"][...] = (dout * xhat).sum(axis=-2, keepdims=True)
        gv[f"beta{i}"][...] = dout.sum(axis=-2, keepdims=True)
        dx = dout * v[f"gamma{i}"]
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
        hits: bool | None = None,
    ) -> Any:
        """Data loss; its gradient is written into ``grads`` (default ``self.grads``).

        The training loop's call: intermediate arrays live in ``self.buffers``. With
        ``hits`` not None it returns (loss, accuracy): the fraction of rows whose predicted
        class is the label (argmax for softmax, z > 0 for sigmoid) when ``hits`` is True,
        else None — a running training accuracy at no extra pass.
        """
        z, cache = self.forward(X, train=train, rng=rng, params=params,
                                update_running=update_running, reuse=True)
        accuracy = None
        if hits:  # before the softmax below overwrites z
            if self.arch.output == "softmax":
                accuracy = (z.argmax(axis=-1) == y).mean(axis=-1)
            else:
                accuracy = ((z[..., 0].real > 0) == (y[..., 0] > 0.5)).mean(axis=-1)
        if self.arch.output == "softmax" and not self.xp.iscomplexobj(z):
            loss, dz = _softmax_cross_entropy(z, y)
        else:
            loss, dz = self.output.forward(z, y), self.output.gradient(z, y)
        self.backward(cache, dz, params=params, grads=grads)
        return loss if hits is None else (loss, accuracy)

    def predict(self, X: Array, params: Array | None = None) -> Array:
        """Output-unit values (probabilities, or the regression output), inference mode."""
        z, _ = self.forward(X, train=False, params=params)
        return self.output.link(z)

    # --------------------------------------------------------- host access
    def arrays(self) -> dict[str, np.ndarray]:
        """Every named array on the host, biases as 1-D vectors, batch-norm statistics too.

        Always copies: a snapshot that later training does not change."""
        out: dict[str, np.ndarray] = {}
        for s in self.slots:
            a = np.array(to_numpy(self.view(self.params, s.name)), copy=True)
            out[s.name] = a.reshape(*a.shape[:-2], a.shape[-1]) if s.shape[0] == 1 else a
        if self.arch.batch_norm:
            for i in range(len(self.arch.hidden)):
                m, v = self.running_view(i)
                out[f"running_mean{i}"] = np.array(to_numpy(m)[..., 0, :], copy=True)
                out[f"running_var{i}"] = np.array(to_numpy(v)[..., 0, :], copy=True)
        return out

    def set_flat(self, flat: np.ndarray, running: np.ndarray | None = None) -> None:
        """Load parameters (and batch-norm statistics) from host arrays."""
        self.params[...] = self.xp.asarray(flat, dtype=self.dtype)
        if running is not None:
            self.running[...] = self.xp.asarray(running, dtype=self.dtype)


def _sum_rows(a: Array, out: Array) -> None:
    """out = Σ over the batch axis of ``a`` (rows), keeping that axis: (…, 1, k)."""
    a.sum(axis=-2, keepdims=True, out=out)


def _softmax_cross_entropy(z: Array, y: Array) -> tuple[Array, Array]:
    """Mean cross-entropy and its gradient (p − onehot(y))/n from one exponential.

    The two rules of ``losses`` (``_ce_forward``, ``_ce_gradient``) fused for the training
    loop: with m = max z and e = exp(z − m), −log p_y = log Σe + m − z_y. ``z`` (a buffer
    of the forward pass) is overwritten by the gradient, which is returned.
    """
    xp = array_module(z)
    n = z.shape[-2]
    m = z.max(axis=-1, keepdims=True)
    z_y = xp.take_along_axis(z, y[..., None], axis=-1)
    z -= m
    e = xp.exp(z, out=z)
    s = e.sum(axis=-1, keepdims=True)
    loss = (xp.log(s) + m - z_y).mean(axis=(-2, -1))  # −(1/n) Σ log p(y_i | x_i)
    e /= s  # p = softmax(z)
    e -= xp.arange(z.shape[-1]) == y[..., None]  # p − onehot(y)
    e /= n
    return loss, e


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
