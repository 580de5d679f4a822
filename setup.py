"""Install prompt-tuning: `pip install -e '.[test]'` (see README.md)."""

import setuptools

# Versions known to install together on Python 3.11 (CPU). GPU users swap
# jax[cpu] for jax[cuda12] at the same version.
INSTALL_REQUIRES = [
    "jax[cpu]==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow-cpu==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "gin-config==0.5.0",
    "absl-py==2.5.1",  # Command-line flags (T5X style).
    "sentencepiece==0.2.3",
    "tensorstore==0.1.86",
    "safetensors==0.8.0",
    "h5py==3.14.0",  # Hugging Face tf_model.h5 (tensorflow needs it too).
    "msgpack==1.2.4",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",  # Ablation plots (imported only when drawing).
    "clu==0.0.12",  # TensorBoard metric writers.
    # tensorflow-datasets imports it but declares it only for Python < 3.9.
    "importlib_resources==7.1.0",
    # The HTTP server (`python -m prompt_tuning.serve`): a small, standard
    # ASGI stack, and Prometheus metrics.
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    # uvicorn's C HTTP parser and event loop (what uvicorn[standard] adds;
    # uvicorn uses them when installed, else pure-Python h11 and asyncio's
    # loop, which cost the server more CPU per request).
    "httptools==0.9.0",
    "uvloop==0.23.0",
    "prometheus_client==0.26.0",
]

setuptools.setup(
    name="prompt-tuning",
    version="0.1.0",
    description=(
        "Parameter-efficient prompt tuning of T5 in JAX/Flax, T5X style "
        "(Lester et al. 2021; P-Tuning v2)."
    ),
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["prompt_tuning", "prompt_tuning.*"])
    + ["prompt_tuning.tasks", "prompt_tuning.configs"],
    package_dir={
        "prompt_tuning": "prompt_tuning",
        "prompt_tuning.tasks": "tasks",
        "prompt_tuning.configs": "configs",
    },
    package_data={"prompt_tuning.configs": ["*.gin", "*/*.gin", "*/*/*.gin"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest==9.2.0", "httpx==0.28.1"],
    },
)
