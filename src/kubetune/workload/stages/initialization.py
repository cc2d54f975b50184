"""The initializer: fetch the model and the tokenized data once into the shared cache volume
(names.ENV_CACHE, on `kubernetes.cache_pvc`), before the training gang starts, so N nodes do
not download N times. Kubeflow Trainer's dataset and model initializers do the same for its
own runtimes; this one uses kubetune's store and cache keys, so the trainers find what it
fetched by the keys they already use (`model.source.local_model_dir`,
`data.token_cache.cached_prepare`) and read nothing more than the cache entry's commit marker.

Several initializers on one volume (the init containers of every pod of an Indexed Job) take
turns through a file lock (names.INITIALIZE_LOCK): the first fetches, the others find every
folder complete. Without the lock nothing breaks (`download_once` renames atomically), but
every pod would download. Without `kubernetes.cache_pvc` there is no shared volume: the
initializer only runs the pre-model checks, so a bad spec still fails in one small pod before
a gang of GPU nodes is scheduled.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kubetune.contract.names import INITIALIZE_LOCK
from kubetune.contract.spec.job import JobSpec
from kubetune.workload.stages.run import PodEnv


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the cache volume's initializer lock (blocking) while fetching."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / INITIALIZE_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prefetch(spec: JobSpec, env: PodEnv, shared: bool | None = None) -> str:
    """Check the job, then (on a shared cache) fetch its model and tokenized data into
    `env.cache_root`; returns the one line the initializer prints. `shared`: whether the
    cache is shared by the gang (default: the spec names a cache PVC)."""
    from kubetune.workload.data.streaming import streaming_source
    from kubetune.workload.data.token_cache import cached_prepare
    from kubetune.workload.model.source import local_model_dir
    from kubetune.workload.stages.preflight import check_job
    from kubetune.workload.stages.training import setup
    from kubetune.workload.trainer.build import load_tokenizer

    if not (spec.kubernetes.cache_pvc is not None if shared is None else shared):
        return check_job(spec)
    with cache_lock(env.cache_root):
        run = setup(spec, env)
        if run is None:
            return f"kubetune: run {spec.name} is already complete; nothing to fetch"
        tokenizer = load_tokenizer(run)
        model = local_model_dir(run.store, run.model_uri, env.cache_root)
        if model == run.model_uri and not Path(model).exists():  # a Hub id: into HF_HOME on the cache volume
            from huggingface_hub import snapshot_download

            snapshot_download(model, revision=spec.model.revision)
        data = "streamed (not cached)"
        if streaming_source(spec, run.store, run.pinned) is None:
            _, hit = cached_prepare(run, tokenizer)
            data = "from the store's cache" if hit else "tokenized and cached"
    return f"kubetune: initialized {spec.name} in {env.cache_root}: model {model}; tokenized data {data}"
