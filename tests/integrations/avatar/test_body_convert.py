"""Chumpy-free reading and conversion of official-style SMPL pickles."""

import pickle
import sys
import types

import numpy as np
import pytest

pytest.importorskip("scipy")
smplx = pytest.importorskip("smplx")

from ssd_toolkit.cli import main  # noqa: E402
from ssd_toolkit.integrations.avatar.body import smpl as body_smpl  # noqa: E402
from ssd_toolkit.integrations.avatar.body import convert, synthetic  # noqa: E402


def _fake_chumpy_modules():
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:  # what pickle records for chumpy values: class path chumpy.ch.Ch, state {'x': ...}
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch, chumpy.ch, chumpy.Ch = Ch, ch, Ch
    return {"chumpy": chumpy, "chumpy.ch": ch}, Ch


def write_chumpy_like_pickle(path, gender="neutral", seed=0):
    """Write a synthetic SMPL pickle laid out like the official chumpy ones.

    ``v_template``, ``shapedirs``, ``weights`` and ``J`` are ``chumpy.ch.Ch`` objects (a
    fake class registered under that module path only while pickling), ``J_regressor`` is a
    ``scipy.sparse.csc_matrix``, protocol 2 as Python 2 wrote. ``pickle.load`` of the result
    fails without chumpy, as with the official files.

    Returns:
        dict: the plain arrays the file encodes (what a converter must recover).
    """
    import scipy.sparse  # noqa: PLC0415

    arrays = synthetic.synthetic_smpl_arrays(gender, seed)
    modules, ch = _fake_chumpy_modules()
    saved = {name: sys.modules.get(name) for name in modules}
    payload = dict(arrays)
    for key in ("v_template", "shapedirs", "weights", "J"):
        payload[key] = ch(arrays[key])
    payload["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    sys.modules.update(modules)
    try:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return arrays


@pytest.fixture(scope="module")
def chumpy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chumpy") / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    arrays = write_chumpy_like_pickle(path)
    return path, arrays


def test_fixture_needs_chumpy_like_the_official_files(chumpy_file):
    path, _ = chumpy_file
    with pytest.raises(ModuleNotFoundError, match="chumpy"), open(path, "rb") as f:
        pickle.load(f, encoding="latin1")
    with open(path, "rb") as f:
        raw = f.read()
    assert b"chumpy.ch" in raw and b"csc_matrix" in raw


def test_loader_recovers_every_array(chumpy_file):
    path, arrays = chumpy_file
    data = convert.load_smpl_pickle(path)
    assert set(data) == set(arrays)
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            assert type(data[key]) is np.ndarray, key
            np.testing.assert_array_equal(data[key], value, err_msg=key)
        else:
            assert data[key] == value


def test_converted_file_is_plain_and_smplx_loads_it(chumpy_file, tmp_path):
    src, arrays = chumpy_file
    dst = tmp_path / "models" / "smpl" / "SMPL_NEUTRAL.pkl"
    convert.convert_smpl_pickle(src, dst)
    with open(dst, "rb") as f:
        plain = pickle.load(f)  # no chumpy, no scipy classes needed
    assert all(isinstance(v, (np.ndarray, str)) for v in plain.values())
    model = smplx.create(str(tmp_path / "models"), model_type="smpl")
    np.testing.assert_allclose(model().vertices[0].detach().numpy(), arrays["v_template"], atol=1e-5)


def test_load_body_model_reads_the_chumpy_file_directly(chumpy_file, tmp_path):
    src, _ = chumpy_file
    direct = body_smpl.posed_body(body_smpl.load_body_model(src))
    plain = body_smpl.posed_body(body_smpl.load_body_model(synthetic.write_synthetic_smpl(tmp_path)))
    np.testing.assert_allclose(direct.vertices, plain.vertices, atol=1e-6)
    np.testing.assert_array_equal(direct.faces, plain.faces)


def test_cli_convert(chumpy_file, tmp_path, capsys):
    src, arrays = chumpy_file
    dst = tmp_path / "SMPL_NEUTRAL.pkl"
    assert main(["convert-smpl", str(src), str(dst)]) == 0
    assert "v_template (6890, 3)" in capsys.readouterr().out
    np.testing.assert_array_equal(convert.load_smpl_pickle(dst)["J_regressor"], arrays["J_regressor"])


def test_errors(chumpy_file, tmp_path):
    src, _ = chumpy_file
    with pytest.raises(FileNotFoundError, match="path: expected an existing SMPL .pkl"):
        convert.load_smpl_pickle(tmp_path / "none.pkl")
    with pytest.raises(ValueError, match="dst: expected a path other than src"):
        convert.convert_smpl_pickle(src, src)
    stub = convert.ChumpyStub()
    stub.__setstate__({"a": 1})
    with pytest.raises(ValueError, match="expected a state with 'x'.*got keys \\['a'\\]"):
        stub.array()
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        convert.load_smpl_pickle(not_dict)
