"""mirnet-edge: the product card's top-level folders mapped into one ``mirnet`` namespace."""
from setuptools import find_packages, setup

FOLDERS = {"sdk": "mirnet.sdk", "train": "mirnet.train", "optimize": "mirnet.optimize",
           "benchmarks": "mirnet.benchmarks"}

packages, package_dir = [], {}
for folder, name in FOLDERS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

TORCH = ["torch>=2.4", "safetensors>=0.4"]
EXTRAS = {
    "ort": ["onnxruntime>=1.18", "onnx>=1.16"],
    "cuda": ["cuda-python>=12.3"],
    "torch": TORCH,
    "train": TORCH + ["pyyaml>=6"],
    "optimize": TORCH + ["onnx>=1.16", "onnxslim>=0.1.40", "onnxruntime>=1.18"],
    "gui": ["opencv-python>=4.8"],
    "dev": ["pytest>=8"],
}
# Every extra that installs from PyPI on a Linux machine without a GPU. TensorRT is not here:
# it comes from JetPack or NVIDIA's package index (see README, "TensorRT").
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name != "gui" for req in reqs})

setup(
    name="mirnet-edge",
    version="0.1.0",
    description="MIRNet-v2 image restoration from training to real-time camera streams on NVIDIA GPUs and Jetson",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"mirnet.sdk.zoo": ["*.safetensors", "*.json"], "mirnet.train": ["configs/*.yaml"]},
    install_requires=["numpy>=1.24", "opencv-python-headless>=4.8", "tqdm>=4.60"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mirnet = mirnet.sdk.cli:run"]},
)
