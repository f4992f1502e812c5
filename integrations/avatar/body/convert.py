"""Chumpy-free reading of official SMPL pickles, and their conversion to plain NumPy.

Official SMPL ``.pkl`` files were written by Python 2 with chumpy objects (``chumpy.ch.Ch``)
for ``v_template``, ``shapedirs``, ``weights``, ``J`` and scipy sparse matrices for the
regressors. chumpy does not install on Python 3.11 / NumPy 2, so ``pickle.load`` fails with
``No module named 'chumpy'``. :class:`ChumpyFreeUnpickler` maps every ``chumpy.*`` class to a
stub that keeps the pickled state (whose ``x`` is the array), and :func:`load_smpl_pickle`
turns stubs and sparse matrices into dense NumPy arrays.
"""

from __future__ import annotations

import os
import pickle

import numpy as np


class ChumpyStub:
    """Stand-in for any chumpy class: keeps the pickled state; ``array()`` returns its value."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"x": state})

    def array(self):
        """The wrapped value as a NumPy array (a chumpy ``Ch`` stores it under ``x``).

        Raises:
            ValueError: the pickled object holds no ``x`` (not a plain ``Ch`` value).
        """
        if "x" not in self.__dict__:
            keys = sorted(k for k in self.__dict__ if not k.startswith("_"))
            raise ValueError(f"chumpy object: expected a state with 'x' (a Ch value), got keys {keys}")
        return to_numpy(self.__dict__["x"])


class ChumpyFreeUnpickler(pickle.Unpickler):
    """Unpickler resolving ``chumpy.*`` classes to :class:`ChumpyStub`.

    Old ``scipy.sparse.<format>`` module paths resolve to the classes in ``scipy.sparse``.
    """

    def find_class(self, module, name):
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStub
        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            import scipy.sparse  # noqa: PLC0415

            return getattr(scipy.sparse, name)
        return super().find_class(module, name)


def to_numpy(value):
    """Dense NumPy for chumpy stubs and scipy sparse matrices; other values as they are."""
    if isinstance(value, ChumpyStub):
        return value.array()
    if hasattr(value, "toarray") and type(value).__module__.startswith("scipy.sparse"):
        return np.asarray(value.toarray())
    return value


def load_smpl_pickle(path):
    """Read a SMPL / SMPL-H / SMPL-X pickle without chumpy.

    Args:
        path: the ``.pkl`` file (Python 2 pickles are read with ``encoding="latin1"``).

    Returns:
        dict: every entry, chumpy values and sparse matrices as dense NumPy arrays.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a pickle, or not a pickled dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: expected an existing SMPL .pkl file, got {path!r}")
    try:
        with open(path, "rb") as f:
            data = ChumpyFreeUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - whatever a foreign file makes the unpickler raise
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("scipy"):
            raise  # sparse regressors need scipy: a missing dependency, not a bad file
        raise ValueError(f"path: expected a pickled SMPL model, got {path!r} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"path: expected a pickled dict of model arrays, got {type(data).__name__} in {path!r}")
    return {key: to_numpy(value) for key, value in data.items()}


def convert_smpl_pickle(src, dst):
    """Write a chumpy-free copy of a SMPL pickle that ``smplx`` (and plain ``pickle``) reads.

    Args:
        src: official (chumpy) or already plain SMPL ``.pkl``.
        dst: output ``.pkl`` path; parent directories are created. For ``smplx.create(dir)``
            name it ``<dir>/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl``.

    Returns:
        dict: the converted arrays (as written).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``src`` and ``dst`` are the same file.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ValueError(f"dst: expected a path other than src, got the same file {dst!r}")
    data = load_smpl_pickle(src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, dst)
    return data
