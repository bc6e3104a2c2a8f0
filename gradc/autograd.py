"""Eager reverse-mode autograd: a tape of primitive applications.

Each differentiable primitive applied to tensors that require grad records a
`Node` holding the primitive, its attributes, the operands it was applied to
(saved as `SavedTensor`s) and one edge per operand: the operand's own node,
the leaf tensor itself (gradients accumulate into `.grad`), or None. The
backward pass walks nodes in reverse topological order and asks the
registry's vjp rules for the cotangents it needs.
"""
from __future__ import annotations

import functools
import threading
import weakref

_state = threading.local()

FREED_MSG = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
    "graph a second time or if you need to access saved tensors after calling backward."
)


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class set_grad_enabled:
    """Context manager (and decorator) that turns gradient recording on or off."""

    def __init__(self, mode: bool = True):
        self.prev = is_grad_enabled()
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __enter__(self):
        _state.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _state.enabled = self.prev
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapped(*a, **k):
            with set_grad_enabled(mode):
                return fn(*a, **k)

        return wrapped


class no_grad(set_grad_enabled):
    """`with gradc.no_grad():` runs ops without recording them for backward."""

    def __init__(self):
        self.prev = is_grad_enabled()
        self.mode = False


class enable_grad(set_grad_enabled):
    def __init__(self):
        self.prev = is_grad_enabled()
        self.mode = True


class Node:
    """One recorded primitive application (what PyTorch calls a grad_fn)."""

    __slots__ = ("prim", "attrs", "saved", "next", "out", "name", "retained", "__weakref__")

    def __init__(self, prim, attrs, saved, next_, out):
        self.prim, self.attrs, self.saved, self.next, self.out = prim, attrs, saved, next_, out
        self.retained = None  # weak reference to the output tensor when it called retain_grad()
        self.name = "".join(p.capitalize() for p in prim.name.split("_")) + "Backward0"

    def __repr__(self):
        return f"<{self.name} object>"

    def name_(self):
        return self.name

    @property
    def next_functions(self):
        from .tensor import Tensor

        return tuple((AccumulateGrad(e) if isinstance(e, Tensor) else e, 0) for e in self.next)

    def free(self):
        for s in self.saved:
            if isinstance(s, SavedTensor):
                s._free()
        if isinstance(self.out, SavedTensor):
            self.out._free()


class AccumulateGrad:
    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def __repr__(self):
        return "<AccumulateGrad object>"


def _saved_class():
    from .tensor import Tensor

    class SavedTensor(Tensor):
        """A tensor kept for backward. Its data is checked on use: it must not
        have been changed in place since it was saved, nor freed."""

        __slots__ = ("_saved_version", "_aval", "_freed", "_origin", "_node_ref")

        @property
        def _data(self):
            if self._freed:
                raise RuntimeError(FREED_MSG)
            if self._version[0] != self._saved_version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: [{self._aval[1].name} {list(self._aval[0])}] is at version "
                    f"{self._version[0]}; expected version {self._saved_version} instead. Hint: avoid "
                    "the in-place operation (write `x = x + y` instead of `x += y`), or .clone() the "
                    "tensor before changing it."
                )
            return Tensor._data.__get__(self)

        @property
        def shape(self):
            from .tensor import Size

            return Size(self._aval[0])

        @property
        def dtype(self):
            return self._aval[1]

        @property
        def ndim(self):
            return len(self._aval[0])

        def _edge(self):
            # for double backward: the saved tensor stands for its original in the graph
            node = self._node_ref() if self._node_ref is not None else None
            return node if node is not None else self._origin

        def _free(self):
            self._freed = True
            Tensor._data.__set__(self, None)

    return SavedTensor


SavedTensor = Tensor_data = None  # set by gradc.tensor once Tensor exists


def save(t, node=None):
    """A SavedTensor sharing t's array and version counter. `node` is the node
    that produced t when t is that node's own output (held weakly: no cycle)."""
    s = SavedTensor.__new__(SavedTensor)
    Tensor_data.__set__(s, t._data)
    s.grad, s.grad_fn, s._retains_grad = None, None, False
    s.requires_grad = t.requires_grad or node is not None
    s._origin = t if t.requires_grad and t.grad_fn is None else None
    s._node_ref = weakref.ref(node) if node is not None else (weakref.ref(t.grad_fn) if t.grad_fn is not None else None)
    s._version = t._version
    s._saved_version = t._version[0]
    s._aval = (tuple(t._data.shape), t.dtype)
    s._freed = False
    return s


def record(out, prim, operands, attrs):
    """Attach a Node to `out` if any operand needs a gradient through `prim`."""
    from .tensor import Tensor

    if not out.dtype.is_floating_point:
        return out  # integer and bool results never carry gradients
    next_ = []
    for i, o in enumerate(operands):
        if isinstance(o, Tensor) and o.requires_grad and prim.differentiable(i):
            next_.append(o._edge())
        else:
            next_.append(None)
    if not any(e is not None for e in next_):
        return out
    saved = tuple(save(o) if isinstance(o, Tensor) else o for o in operands)
    node = Node(prim, attrs, saved, tuple(next_), None)
    node.out = save(out, node)
    out.grad_fn = node
    out.requires_grad = True
    return out


def _topo(roots):
    """Nodes reachable from roots, each after every node that feeds it a cotangent."""
    order, seen = [], set()
    stack = [(r, False) for r in roots]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((e, False) for e in node.next if isinstance(e, Node) and id(e) not in seen)
    return order[::-1]


def run_backward(outputs, grad_outputs, retain_graph=False, create_graph=False, inputs=None):
    """Propagate cotangents from outputs. With `inputs`, return their gradients
    instead of accumulating into leaves' `.grad`."""
    from .tensor import Tensor

    cot = {}
    leaf_cot = {}
    for t, g in zip(outputs, grad_outputs):
        if t.grad_fn is None:
            if not t.requires_grad:
                raise RuntimeError(
                    "element 0 of tensors does not require grad and does not have a grad_fn: "
                    "the output does not depend on any tensor with requires_grad=True"
                )
            leaf_cot[id(t)] = (t, _acc(leaf_cot.get(id(t), (None, None))[1], g))
        else:
            cot[id(t.grad_fn)] = _acc(cot.get(id(t.grad_fn)), g)
    want = None
    if inputs is not None:
        want = {id(i.grad_fn) if i.grad_fn is not None else id(i): k for k, i in enumerate(inputs)}
        result = [None] * len(inputs)
    roots = [t.grad_fn for t in outputs if t.grad_fn is not None]
    with set_grad_enabled(create_graph):
        for node in _topo(roots):
            g = cot.pop(id(node), None)
            if g is None:
                continue
            if want is not None and id(node) in want:
                result[want[id(node)]] = g
            if want is None and node.retained is not None and node.retained() is not None:
                t = node.retained()
                g_kept = g if create_graph else g.detach().clone()
                t.grad = g_kept if t.grad is None else t.grad + g_kept
            needs = tuple(e is not None for e in node.next)
            cts = node.prim.cotangents(g, node.saved, node.out, node.attrs, needs)
            for edge, ct in zip(node.next, cts):
                if edge is None or ct is None:
                    continue
                if isinstance(edge, Tensor):
                    leaf_cot[id(edge)] = (edge, _acc(leaf_cot.get(id(edge), (None, None))[1], ct))
                else:
                    cot[id(edge)] = _acc(cot.get(id(edge)), ct)
            if not retain_graph:
                node.free()
    if want is not None:
        for key, (leaf, g) in leaf_cot.items():
            if key in want:
                result[want[key]] = g
        return result
    taken = {id(g._data) for g in grad_outputs}  # arrays .grad must not share (they are changed in place)
    for leaf, g in leaf_cot.values():
        g = g if create_graph else g.detach()
        if leaf.grad is None:
            # .grad must own writable memory: users and optimizers change it in place
            own = g._data.flags.writeable and g._data.base is None and id(g._data) not in taken
            leaf.grad = g if own else g.clone()
            taken.add(id(leaf.grad._data))
        elif create_graph:
            leaf.grad = leaf.grad + g
        else:
            leaf.grad._data += g._data
            leaf.grad._version[0] += 1
    return None


def _acc(a, b):
    return b if a is None else a + b


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of outputs with respect to inputs, returned (not accumulated)."""
    from .tensor import Tensor, _ones_like_for_backward

    single = isinstance(inputs, Tensor)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    grad_outputs = [_ones_like_for_backward(o) if g is None else g for o, g in zip(outputs, grad_outputs)]
    for i in inputs:
        if not i.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    res = run_backward(outputs, grad_outputs, retain_graph=create_graph if retain_graph is None else retain_graph,
                       create_graph=create_graph, inputs=inputs)
    if not allow_unused and any(r is None for r in res):
        raise RuntimeError(
            "One of the differentiated Tensors appears to not have been used in the graph. "
            "Set allow_unused=True if this is the desired behavior."
        )
    return tuple(res)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    from .tensor import Tensor

    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors] * len(tensors) if grad_tensors is None else [grad_tensors]
    for t, g in zip(tensors, grad_tensors):
        t.backward(g, retain_graph=retain_graph, create_graph=create_graph)
