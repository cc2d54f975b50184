"""Every name the launcher and the pod must agree on, written once.

The launcher renders these into manifests (or local processes) and the pod reads them back, so
a name defined twice is a name that can drift. Nothing outside `kubetune.contract` spells a
`KUBETUNE_*` variable, an in-pod path, a label key or an entrypoint module as a literal; a test
(`tests/project/test_contract_names.py`) scans `src/` to keep it that way.

Pure constants: no imports beyond the standard library, so both sides can load it for free.
"""

from __future__ import annotations

from typing import Literal

# --- Stages ------------------------------------------------------------------------------------
# A stage is one Job (and one entrypoint) of a job: train, then evaluate; predict is separate.
STAGE_TRAIN = "train"
STAGE_EVALUATE = "evaluate"
STAGE_PREDICT = "predict"
# `render --stage all`: train and a parked evaluate Job in one stream.
STAGE_ALL = "all"
Stage = Literal["train", "evaluate", "predict"]
RUN_STAGES: tuple[str, ...] = (STAGE_TRAIN, STAGE_EVALUATE)
RENDER_STAGES: tuple[str, ...] = (STAGE_TRAIN, STAGE_EVALUATE, STAGE_ALL, STAGE_PREDICT)
SUBMIT_STAGES: tuple[str, ...] = (STAGE_TRAIN, STAGE_EVALUATE, STAGE_ALL)

# --- Engines ------------------------------------------------------------------------------------
# What runs the training gang on a cluster (`--engine`, `kubernetes.engine`): a plain Indexed
# Job, a JobSet (jobset.x-k8s.io) or a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org).
ENGINE_JOB = "job"
ENGINE_JOBSET = "jobset"
ENGINE_TRAINJOB = "trainjob"
Engine = Literal["job", "jobset", "trainjob"]
ENGINES: tuple[str, ...] = (ENGINE_JOB, ENGINE_JOBSET, ENGINE_TRAINJOB)
# The ClusterTrainingRuntime every kubetune TrainJob references (k8s/trainjob-runtime.yaml), and
# the names Kubeflow Trainer gives its parts: the trainer's replicated job and container, and the
# initializer's.
TRAINING_RUNTIME = "kubetune"
TRAINER_NODE = "node"
INITIALIZER = "initializer"
# Kubeflow Trainer's status endpoint, injected by its controller into a TrainJob's pods (the
# TrainJobStatus feature): its URL, the CA file and the bearer token file. transformers'
# KubeflowCallback reads them; the workload only checks the URL is there.
ENV_KUBEFLOW_STATUS_URL = "KUBEFLOW_TRAINER_SERVER_URL"
ENV_KUBEFLOW_STATUS_CA = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
ENV_KUBEFLOW_STATUS_TOKEN = "KUBEFLOW_TRAINER_SERVER_TOKEN"
# The Job and JobSet engines' progress channel (`kubectl get configmap -L PROGRESS_LABEL`): the
# name of the job's progress ConfigMap, which only the train pods' ServiceAccount may get and
# patch, and the folder of the pod's projected API credentials (TOKEN_FILE, CA_FILE,
# NAMESPACE_FILE). The API server's address is the one every pod is given by the kubelet.
ENV_PROGRESS_CONFIGMAP = "KUBETUNE_PROGRESS_CONFIGMAP"
ENV_PROGRESS_CREDENTIALS = "KUBETUNE_PROGRESS_CREDENTIALS"
ENV_KUBERNETES_HOST = "KUBERNETES_SERVICE_HOST"
ENV_KUBERNETES_PORT = "KUBERNETES_SERVICE_PORT"
# The manager of the runtime patch each kubetune TrainJob carries (spec.runtimePatches).
RUNTIME_PATCH_MANAGER = "kubetune.io/launcher"

# --- Entrypoint modules (`python -m MODULE`) -----------------------------------------------------
ENTRYPOINT_PACKAGE = "kubetune.workload.entrypoints"
TRAIN_MODULE = f"{ENTRYPOINT_PACKAGE}.train"
EVALUATE_MODULE = f"{ENTRYPOINT_PACKAGE}.evaluate"
PREDICT_MODULE = f"{ENTRYPOINT_PACKAGE}.predict"
# Scheduled retraining: train a new model, then evaluate it, in one pod.
RETRAIN_MODULE = f"{ENTRYPOINT_PACKAGE}.retrain"
# `kubetune models promote` and a multi-node schedule's follow-up step: score a finished run
# against the current version on the gate data, then promote it or not.
PROMOTE_MODULE = f"{ENTRYPOINT_PACKAGE}.promote"
# `kubetune validate --data`: check the data files and the model folder, load no weights.
CHECK_MODULE = f"{ENTRYPOINT_PACKAGE}.check"
# The initializer (one pod, or each pod's init container, before the training gang): the model
# and the tokenized data fetched once into the shared cache volume (`kubernetes.cache_pvc`).
INITIALIZE_MODULE = f"{ENTRYPOINT_PACKAGE}.initialize"
# In the cache volume: the initializer's lock, so init containers of several pods prefetch once.
INITIALIZE_LOCK = ".kubetune-initialize.lock"
# torchrun that keeps the workers' exit codes (several processes per pod, or several pods).
DISTRUN_MODULE = f"{ENTRYPOINT_PACKAGE}.distrun"
STAGE_MODULES: dict[str, str] = {
    STAGE_TRAIN: TRAIN_MODULE,
    STAGE_EVALUATE: EVALUATE_MODULE,
    STAGE_PREDICT: PREDICT_MODULE,
}

# --- Environment variables ----------------------------------------------------------------------
# The resolved spec file (also passed as --spec).
ENV_SPEC = "KUBETUNE_SPEC"
# The Kubernetes Job's name (from the Job controller's label), and the pod's own name.
ENV_JOB_NAME = "KUBETUNE_JOB_NAME"
ENV_POD_NAME = "KUBETUNE_POD_NAME"
# The run folder's name: `runs/$KUBETUNE_RUN/` (a scheduled run sets it to its Job's name).
ENV_RUN = "KUBETUNE_RUN"
# Set on a sweep's trial pods (docs/sweeps.md): the sweep's job name and the trial's number, so
# the trial's tracker runs are grouped by sweep (MLflow tags, the W&B group).
ENV_SWEEP = "KUBETUNE_SWEEP"
ENV_TRIAL = "KUBETUNE_TRIAL"
# Set on a trial whose sweep prunes: at each evaluation the trial waits up to this many seconds
# for the controller's verdict on that step (RunLayout.sweep_verdicts), then goes on without it.
ENV_SWEEP_VERDICT_SECONDS = "KUBETUNE_SWEEP_VERDICT_SECONDS"
# Pods of a multi-pod Job: how many, and which one this is (the completion index).
ENV_NUM_NODES = "KUBETUNE_NUM_NODES"
ENV_NODE_RANK = "KUBETUNE_NODE_RANK"
# Where downloaded models and tokenized data are kept (the /cache volume or PVC in a pod).
ENV_CACHE = "KUBETUNE_CACHE"
# Local scratch for the Trainer's output (the /tmp emptyDir in a pod).
ENV_WORKDIR = "KUBETUNE_WORKDIR"
# Set by distrun for its workers: a worker that saved a checkpoint on SIGTERM touches this
# file, so torchrun's own exit code (which hides the workers') can still report it.
ENV_RETRY_FLAG = "KUBETUNE_RETRY_FLAG"
# Set by the launcher for every entrypoint it starts on this machine (`run --local`'s pods,
# `validate --data`, `models promote`): each entrypoint asks the kernel to kill it when its parent
# dies (PR_SET_PDEATHSIG), so a SIGKILLed launcher leaves no trainer behind.
ENV_DIE_WITH_PARENT = "KUBETUNE_DIE_WITH_PARENT"
# The user's spec file as given on the launcher's command line (`jobs/x.yaml`), so the pod's
# one-line errors name it as the launcher's do: in the pod the spec is at SPEC_PATH. A name,
# never a file's content; left out when it looks like a credential (spec_loading).
ENV_SPEC_FILE = "KUBETUNE_SPEC_FILE"
# The launcher's own setting (never passed to a pod): seconds between two plain progress lines
# of `run --local` when its output is not a terminal; 0 prints every line.
ENV_PROGRESS_INTERVAL = "KUBETUNE_PROGRESS_INTERVAL"
# The launcher's own setting (never passed to a pod): seconds after which `run --local` starts a
# replacement for a lost node of an elastic gang, as a Job controller replaces a lost pod; the
# word LOCAL_REPLACE_NEVER leaves it out (the gang trains on at the size it has).
ENV_LOCAL_REPLACE_SECONDS = "KUBETUNE_LOCAL_REPLACE_SECONDS"
LOCAL_REPLACE_NEVER = "never"
LOCAL_REPLACE_DEFAULT_S = 30.0
# Standard variables the rendered pod sets for the libraries it runs.
ENV_HF_HOME = "HF_HOME"
ENV_HOME = "HOME"
ENV_TMPDIR = "TMPDIR"
ENV_AWS_CREDENTIALS_FILE = "AWS_SHARED_CREDENTIALS_FILE"
ENV_GCP_CREDENTIALS_FILE = "GOOGLE_APPLICATION_CREDENTIALS"  # a gs:// root's key file (storage_credentials: file)
# Set by the Job controller in every pod of an Indexed Job.
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
# Weights & Biases (`tracking.wandb`): the renderer sets the project, entity and the folder the
# wandb library writes to (on the cache volume: the root file system is read-only); the API key comes only by
# reference (`kubernetes.secret_env`), and WANDB_MODE=offline runs without one.
ENV_WANDB_PROJECT = "WANDB_PROJECT"
ENV_WANDB_ENTITY = "WANDB_ENTITY"
ENV_WANDB_DIR = "WANDB_DIR"
ENV_WANDB_API_KEY = "WANDB_API_KEY"
ENV_WANDB_MODE = "WANDB_MODE"
# The prefix of kubetune's own variables, and the other variables the renderer sets in every
# pod: `kubernetes.env`/`kubernetes.secret_env` may not set these (a duplicate name would
# silently override the contract). A launcher test checks this list against the rendered pods.
ENV_PREFIX = "KUBETUNE_"
# Multi-node train pods: every rendezvous round gets a fresh store for the workers (torch's
# shared agent store keeps the previous round's keys, and a restarted gang hangs on them:
# pytorch/pytorch#135712).
ENV_TORCH_NO_SHARED_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
# The thread pools every pod sizes to its share of the CPU (resources.threads_per_process):
# OpenMP's and MKL's (torch's intra-op threads) and the tokenizers' Rayon pool. A value you set
# yourself (kubernetes.env in a pod, your shell for `run --local`) wins over kubetune's.
ENV_OMP_THREADS = "OMP_NUM_THREADS"
ENV_MKL_THREADS = "MKL_NUM_THREADS"
ENV_RAYON_THREADS = "RAYON_NUM_THREADS"
ENV_TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"
THREAD_ENV = (ENV_OMP_THREADS, ENV_MKL_THREADS, ENV_RAYON_THREADS, ENV_TOKENIZERS_PARALLELISM)
RENDERED_ENV = frozenset(
    {
        ENV_HF_HOME,
        ENV_HOME,
        ENV_TMPDIR,
        ENV_AWS_CREDENTIALS_FILE,
        ENV_GCP_CREDENTIALS_FILE,
        ENV_COMPLETION_INDEX,
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "XDG_CACHE_HOME",
        "TRITON_CACHE_DIR",
        "MPLCONFIGDIR",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
        "CUDA_VISIBLE_DEVICES",
        ENV_TORCH_NO_SHARED_STORE,
        ENV_WANDB_PROJECT,
        ENV_WANDB_ENTITY,
        ENV_WANDB_DIR,
    }
)

# --- In-pod paths -------------------------------------------------------------------------------
SPEC_DIR = "/etc/kubetune"
SPEC_KEY = "spec.yaml"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
CREDENTIALS_DIR = "/var/run/secrets/kubetune/storage"
CREDENTIALS_KEY = "credentials"
CACHE_DIR = "/cache"
SCRATCH_DIR = "/tmp"
SHM_DIR = "/dev/shm"
# The train pods' projected API credentials (Job and JobSet engines): the files the kubelet
# writes for a service account, but only in this container and only for the progress reporter.
PROGRESS_CREDENTIALS_DIR = "/var/run/secrets/kubetune/progress"
TOKEN_FILE = "token"
CA_FILE = "ca.crt"
NAMESPACE_FILE = "namespace"

# --- Prediction output folders ------------------------------------------------------------------
# kubetune's owner record in a prediction output folder: the job that wrote it and the part
# files it wrote (`{"job": NAME, "parts": [...]}`). Only parts listed here are ever removed.
PREDICTIONS_OWNER_FILE = "_kubetune_predictions.json"

# --- Labels and annotations ---------------------------------------------------------------------
# Ours: every object of a job carries JOB_LABEL; pods also STAGE_LABEL.
JOB_LABEL = "kubetune.io/job"
STAGE_LABEL = "kubetune.io/stage"
# The progress ConfigMap's labels (Job and JobSet engines), shown by `kubectl get configmap -L`:
# percent done, the step, the estimated seconds left; its data key METRICS_KEY holds the latest
# metrics as JSON.
PROGRESS_LABEL = "kubetune.io/progress"
STEP_LABEL = "kubetune.io/step"
ETA_LABEL = "kubetune.io/eta-seconds"
PROGRESS_METRICS_KEY = "metrics.json"
SPEC_HASH_ANNOTATION = "kubetune.io/spec-sha256"
# The Job controller's, on the pods it creates (the old unprefixed name is still set too).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
JOB_NAME_LABELS: tuple[str, ...] = (JOB_NAME_LABEL, LEGACY_JOB_NAME_LABEL)
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
# A sweep's trials (docs/sweeps.md): every object of a trial carries the sweep's job name and
# the trial's number, so a restarted controller finds its running trials by their labels.
SWEEP_LABEL = "kubetune.io/sweep"
TRIAL_LABEL = "kubetune.io/trial"
# Kueue's queue label.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
