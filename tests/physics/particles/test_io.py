"""Particle extended-XYZ files: round trips, atomic writes, clear errors."""

from __future__ import annotations

import os

import ase.io
import numpy as np
import pytest
import torch

from physics.particles.io import ParticleFileError, read_extxyz, read_extxyz_energies, write_extxyz


def _x(b: int, n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, n, d)) * 3


@pytest.mark.parametrize("d", [2, 3])
def test_round_trip_with_energies(tmp_path, d):
    x = _x(5, 13, d)
    e = np.linspace(-40.0, 2.0, 5)
    e[-1] = np.inf  # an exploded energy survives the trip
    path = write_extxyz(torch.tensor(x), tmp_path / "s.extxyz", energies=e, info={"step": 7})
    assert path == tmp_path / "s.extxyz"
    y = read_extxyz(path, dim=d)
    assert y.shape == (5, 13, d) and y.dtype == np.float64
    np.testing.assert_allclose(y, x, atol=1e-7)  # ASE writes 8 decimals
    np.testing.assert_array_equal(read_extxyz_energies(path), e)
    frames = ase.io.read(path, index=":")
    assert [a.get_chemical_symbols()[0] for a in frames] == ["Ar"] * 5
    assert not frames[0].pbc.any() and frames[0].info["step"] == 7
    if d == 2:
        assert all((a.positions[:, 2] == 0).all() for a in frames)
        with pytest.raises(ParticleFileError, match="z != 0"):
            read_extxyz(write_extxyz(_x(2, 3, 3), tmp_path / "3d.xyz"), dim=2)


def test_symbol_per_frame_info_and_no_energies(tmp_path):
    x = _x(2, 4, 3)
    path = write_extxyz(x, tmp_path / "s.xyz", symbol="Ne", info=[{"k": 1}, {"k": 2}])
    frames = ase.io.read(path, index=":")
    assert frames[1].get_chemical_symbols() == ["Ne"] * 4 and frames[1].info["k"] == 2
    assert np.isnan(read_extxyz_energies(path)).all()
    with pytest.raises(ValueError, match="info"):
        write_extxyz(x, tmp_path / "t.xyz", info=[{}])
    with pytest.raises(ValueError, match="energies"):
        write_extxyz(x, tmp_path / "t.xyz", energies=[1.0])
    assert not (tmp_path / "t.xyz").exists()


def test_empty_sample_set(tmp_path):
    path = write_extxyz(np.zeros((0, 4, 3)), tmp_path / "e.xyz")
    assert path.read_text() == ""
    assert read_extxyz(path).shape == (0, 0, 3)


def test_nonfinite_positions_are_refused_and_nothing_written(tmp_path):
    x = _x(4, 3, 2)
    x[2, 1, 0] = np.nan
    path = tmp_path / "s.xyz"
    with pytest.raises(ValueError, match="frame 2"):
        write_extxyz(x, path)
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        write_extxyz(_x(1, 3, 3), tmp_path / "nope" / "s.xyz")


def test_atomic_write_leaves_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "s.xyz"
    write_extxyz(_x(2, 3, 3), path)
    old = path.read_text()

    real_write = ase.io.write

    def failing_write(fh, images, **kw):
        real_write(fh, images[:1], **kw)  # half the output is out ...
        raise RuntimeError("disk on fire")  # ... then the writer dies

    monkeypatch.setattr(ase.io, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_extxyz(_x(5, 3, 3, seed=1), path)
    assert path.read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.xyz"]  # no temporary file left
    new = tmp_path / "new.xyz"
    with pytest.raises(RuntimeError):
        write_extxyz(_x(5, 3, 3), new)
    assert not new.exists()


def test_written_file_has_normal_permissions(tmp_path):
    path = write_extxyz(_x(1, 3, 3), tmp_path / "s.xyz")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        read_extxyz(tmp_path / "missing.xyz")


@pytest.mark.parametrize(
    "text",
    [
        "3\nProperties=species:S:1:pos:R:3\nAr 0 0 0\nAr 1 0 0\n",  # truncated frame
        "3\nProperties=species:S:1:pos:R:3\nAr 0 0 0\nAr 1 zero 0\nAr 2 0 0\n",  # not a number
        "not a count\nhello\n",
    ],
)
def test_corrupt_file(tmp_path, text):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(ParticleFileError, match="bad.xyz: not a readable"):
        read_extxyz(path)


def test_ragged_frames(tmp_path):
    a, b = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write_extxyz(_x(2, 3, 3), a)
    write_extxyz(_x(1, 4, 3), b)
    path = tmp_path / "ragged.xyz"
    path.write_text(a.read_text() + b.read_text())
    with pytest.raises(ParticleFileError, match="frame 2"):
        read_extxyz(path)


def test_nan_coordinates_in_file(tmp_path):
    path = tmp_path / "nan.xyz"
    write_extxyz(_x(3, 2, 3), path)
    lines = path.read_text().splitlines()
    # frame 1 starts at line 4 (count, comment, 2 atoms per frame)
    lines[6] = "Ar nan 0.0 0.0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParticleFileError, match="frame 1"):
        read_extxyz(path)
