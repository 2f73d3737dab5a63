"""GPU job placement for `make ablate`, with the device count patched: runs per GPU, round-robin
pinning, threads."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from experiments import ablate, placement
from experiments.config import resolve
from experiments.placement import RUNS_PER_GPU, place


def test_a_cpu_machine_runs_one_job_per_core_unpinned():
    where = place(None, cores=8, gpus=0, devices={"auto"})
    assert (where.jobs, where.threads, where.gpus) == (8, 1, ())
    assert where.gpu_of(3) is None


def test_one_gpu_holds_several_runs_and_the_cores_are_shared_out():
    where = place(None, cores=16, gpus=1, devices={"auto"})
    assert where.jobs == RUNS_PER_GPU and where.threads == 16 // RUNS_PER_GPU
    assert {where.gpu_of(i) for i in range(where.jobs)} == {"0"}


def test_workers_are_pinned_round_robin_over_every_visible_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    where = place(None, cores=64, gpus=3, devices={"auto", "cuda"})
    assert where.jobs == 3 * RUNS_PER_GPU
    assert [where.gpu_of(i) for i in range(6)] == ["0", "1", "2", "0", "1", "2"]
    assert where.threads * where.jobs <= 64  # never more threads than cores


def test_pinning_names_gpus_as_cuda_visible_devices_does(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    where = place(None, cores=16, gpus=2, devices={"auto"})
    assert [where.gpu_of(i) for i in range(4)] == ["5", "7", "5", "7"]


def test_there_are_never_more_workers_than_cores():
    where = place(None, cores=2, gpus=4, devices={"auto"})
    assert (where.jobs, where.threads) == (2, 1) and where.gpus == ("0", "1", "2", "3")


def test_jobs_overrides_the_count_and_pinning_follows(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    where = place(7, cores=16, gpus=2, devices={"auto"})
    assert (where.jobs, where.threads) == (7, 2)
    assert [where.gpu_of(i) for i in range(3)] == ["0", "1", "0"]


@pytest.mark.parametrize("device", ["cpu", "cuda:1"])
def test_runs_that_name_their_device_are_not_pinned(device):
    where = place(None, cores=8, gpus=2, devices={device})
    assert where.gpus == () and where.jobs == 8


def test_the_machine_placement_reads_the_cuda_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(placement, "default_jobs", lambda: 16)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    where = placement.for_runs([resolve("smoke")], None)
    assert (where.jobs, where.gpus) == (2 * RUNS_PER_GPU, ("0", "1"))
    assert "pinned round-robin to 2 GPU(s)" in where.describe()


def test_an_ablate_worker_sees_only_the_gpu_its_start_order_gives_it():
    """A real spawned worker, started as the second one: it takes the second GPU, before torch
    touches CUDA."""
    spawn = multiprocessing.get_context("spawn")
    where = placement.Placement(jobs=1, threads=1, gpus=("5", "7"))
    started = spawn.Value("i", 1)
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=ablate._init_worker,
                             initargs=(where, started, os.getpid())) as pool:
        assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result(timeout=120) == "7"
        assert pool.submit(torch.get_num_threads).result(timeout=60) == 1
    assert started.value == 2
