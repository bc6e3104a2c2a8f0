"""`Module`: the base class of layers and models, as `torch.nn.Module`.

A module keeps three ordered registries: its own parameters, buffers and
child modules. Setting an attribute to a `Parameter` or a `Module` registers
it; everything else that walks a model (named_parameters, state_dict, train,
to, repr) is a traversal of these registries, and names follow PyTorch's
dotted paths (`0.weight`, `encoder.layers.1.bias`), so state dicts and the
names compiled code gives its inputs line up with PyTorch's.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import autograd
from .. import dtypes as _dt
from ..tensor import Tensor
from .parameter import Parameter

_SUPER_HINT = "Call super().__init__() at the start of your module's __init__."

# How many times a watched module's attributes or registries changed: a compiled step's
# guard watches the modules it reads and compares this one number instead of every entry
# of every module (gradc/guards.py). Modules nobody watches (a loss module made in a
# loop, a model being built) change freely.
changes = [0]


class Registry(OrderedDict):
    """A module's parameters, buffers or children: an OrderedDict that counts its changes
    once a guard watches it (the module's own attributes count with its registries)."""

    watched = False

    def _changed(self):
        if self.watched:
            changes[0] += 1

    def __setitem__(self, key, value):
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._changed()
        super().__delitem__(key)

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def popitem(self, last=True):
        self._changed()
        return super().popitem(last)

    def setdefault(self, key, default=None):
        self._changed()
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        self._changed()
        super().update(*args, **kwargs)

    def clear(self):
        self._changed()
        super().clear()

    def move_to_end(self, key, last=True):
        self._changed()
        super().move_to_end(key, last)

    def __ior__(self, other):
        self.update(other)
        return self


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What `load_state_dict(strict=False)` returns."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _indent_tail(text: str, spaces: int) -> str:
    """Indent every line but the first (child reprs nest under their `(name): ` label)."""
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line for line in rest])


def _check_name(kind: str, name) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')


class Module:
    """Base class for all neural network modules; subclasses define `forward`."""

    def __init__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
        if args:
            raise TypeError(f"{type(self).__name__}.__init__() takes 1 positional argument but {len(args) + 1} were given")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = Registry()
        d["_buffers"] = Registry()
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = Registry()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function. Define '
            "`def forward(self, x): ...` in the class."
        )

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ registration
    def _registry(self, key, what):
        reg = self.__dict__.get(key)
        if reg is None:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call. {_SUPER_HINT}")
        return reg

    def register_parameter(self, name: str, param) -> None:
        params = self._registry("_parameters", "parameter")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in params:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{_type_name(param)}' object to parameter '{name}' (gradc.nn.Parameter or None "
                "required). Wrap the tensor: nn.Parameter(t)."
            )
        if param is not None and param.grad_fn is not None:
            raise ValueError(
                f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be created "
                f"explicitly. To express '{name}' as a function of another Tensor, compute the value in the "
                "forward() method."
            )
        params[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        buffers = self._registry("_buffers", "buffer")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_type_name(tensor)}' object to buffer '{name}' (gradc Tensor or None required)")
        buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module) -> None:
        modules = self._registry("_modules", "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_type_name(module)} is not a Module subclass")
        _check_name("module", name)
        if hasattr(self, name) and name not in modules:
            raise KeyError(f"attribute '{name}' already exists")
        modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        params, buffers, modules = d.get("_parameters"), d.get("_buffers"), d.get("_modules")
        if isinstance(value, Parameter):
            self._registry("_parameters", "parameters")
            self._forget(name, keep="_parameters")
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{_type_name(value)}' as parameter '{name}' (gradc.nn.Parameter or None "
                    f"expected). Wrap it as nn.Parameter(t), or copy values in place: "
                    f"`with gradc.no_grad(): module.{name}.copy_(t)`."
                )
            params[name] = None
        elif isinstance(value, Module):
            self._registry("_modules", "module")
            self._forget(name, keep="_modules")
            modules[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as child module '{name}' (gradc.nn.Module or None expected)")
            modules[name] = None
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' (gradc.Tensor or None expected)")
            buffers[name] = value
        else:
            self._changed()
            object.__setattr__(self, name, value)

    def _changed(self):
        """Count a change of this module's own attributes, if a guard watches it (see `changes`)."""
        if getattr(self.__dict__.get("_modules"), "watched", False):
            changes[0] += 1

    def _forget(self, name, keep):
        """Drop `name` from the instance dict and the other registries before it is registered in `keep`
        (where an existing entry keeps its position, so replacing a layer keeps the order)."""
        d = self.__dict__
        if name in d:
            self._changed()
            del d[name]
        for key in ("_parameters", "_buffers", "_modules"):
            if key != keep:
                d[key].pop(name, None)
        d["_non_persistent_buffers_set"].discard(name)

    def __getattr__(self, name):
        d = object.__getattribute__(self, "__dict__")  # no recursion while unpickling, before __init__
        for key in ("_parameters", "_buffers", "_modules"):
            reg = d.get(key)
            if reg is not None and name in reg:
                return reg[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if name in d.get(key, ()):
                del d[key][name]
                d["_non_persistent_buffers_set"].discard(name)
                return
        self._changed()
        object.__delattr__(self, name)

    def __dir__(self):
        d = self.__dict__
        keys = (set(d.get(k, ())) for k in ("_parameters", "_buffers", "_modules"))
        return sorted(set(super().__dir__()).union(*keys))

    # ------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        owners = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for owner_prefix, owner in owners:
            for name, t in getattr(owner, registry).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield owner_prefix + ("." if owner_prefix else "") + name, t

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        mod = self
        for i, part in enumerate(target.split(".") if target else []):
            if part not in mod._modules or mod._modules[part] is None:
                path = ".".join(target.split(".")[:i]) or "the model"
                raise AttributeError(f"{type(mod).__name__} ({path}) has no attribute `{part}`")
            mod = mod._modules[part]
        return mod

    def apply(self, fn):
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            if m.__dict__["training"] is not mode:
                m._changed()
                m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad = p.grad.detach()
                with autograd.no_grad():
                    p.grad.zero_()

    # ------------------------------------------------------------ dtype
    def to(self, *args, **kwargs):
        """Convert floating-point parameters and buffers in place (the same objects keep their identity,
        so an optimizer built earlier still holds them). Devices other than the CPU are refused."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to() received an invalid combination of arguments: {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype
            elif isinstance(a, str) and not _is_dtype_name(a):
                device = a
            elif a is not None and not isinstance(a, bool):
                dtype = a
        if device is not None and not str(device).startswith("cpu"):
            raise RuntimeError(f"gradc runs on the CPU only; cannot move a module to {device!r}")
        if dtype is None:
            return self
        dtype = _dt.as_dtype(dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but got desired dtype={dtype!r}")
        return self._cast_floats(dtype)

    def _cast_floats(self, dtype):
        seen = set()
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None or id(t) in seen or not t.dtype.is_floating_point:
                    continue
                seen.add(id(t))
                _retype(t, dtype)
                if t.grad is not None:
                    _retype(t.grad, dtype)
        return self

    def float(self):
        return self._cast_floats(_dt.float32)

    def double(self):
        return self._cast_floats(_dt.float64)

    def type(self, dst_type):
        return self.to(dst_type)

    def cpu(self):
        return self

    def cuda(self, device=None):
        raise RuntimeError("gradc runs on the CPU only; remove the .cuda() call (or use .to('cpu')).")

    # ------------------------------------------------------------ state dicts
    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False):
        """Parameters and persistent buffers by dotted name. Values share memory with the module's tensors
        (detached unless keep_vars); tied tensors appear under every name, as in PyTorch."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def _state_tensors(self, prefix=""):
        """(key, tensor) for everything `state_dict` would hold, walking children like it does."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                yield prefix + name, b
        for name, child in self._modules.items():
            if child is not None:
                yield from child._state_tensors(prefix + name + ".")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values into the existing tensors in place, so references to them (optimizers) stay valid."""
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing, errors, expected = [], [], set()
        for key, t in self._state_tensors():
            expected.add(key)
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                if not isinstance(value, np.ndarray):
                    errors.append(
                        f'While copying the parameter named "{key}", expected gradc.Tensor or Tensor-like object '
                        f"from checkpoint but received {type(value)}"
                    )
                    continue
                value = Tensor._wrap(value)
            if tuple(value.shape) != tuple(t.shape):
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, the "
                    f"shape in current model is {t.shape}."
                )
                continue
            with autograd.no_grad():
                t.copy_(value.to(t.dtype))
        unexpected = [k for k in state_dict.keys() if k not in expected]
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing)))
        if errors:
            hint = (
                "Hint: compare model.state_dict().keys() with the checkpoint's keys; load_state_dict(sd, strict=False) "
                "ignores missing and unexpected keys (not size mismatches)."
            )
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors + [hint])
            )
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_indent_tail(repr(m), 2)}" for name, m in self._modules.items()]
        if not child_lines and len(extra_lines) <= 1:
            return f"{self._get_name()}({extra})"
        body = "\n  ".join(extra_lines + child_lines)
        return f"{self._get_name()}(\n  {body}\n)"


def _type_name(x) -> str:
    t = type(x)
    return "gradc.Tensor" if t is Tensor else t.__name__


def _is_dtype_name(s: str) -> bool:
    try:
        _dt.as_dtype(s)
        return True
    except TypeError:
        return False


def _retype(t: Tensor, dtype) -> None:
    if t.dtype is not dtype:
        t._data = t._data.astype(dtype.np)
