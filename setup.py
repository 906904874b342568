"""Packaging for unified_latents. Every setting lives in settings.ini (the nbdev 2 layout)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=["="])
config.read(here / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

expected = ("version description keywords author author_email lib_name user branch "
            "license status min_python audience language git_url").split()
missing = [key for key in expected if key not in cfg]
if missing:
    raise SystemExit(f"settings.ini lacks the setting(s) {missing}; setup.py needs all of {expected}.")

statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta",
            "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
# Requirements are separated by spaces; an environment marker is written without any
# (triton;platform_system=="Linux").
requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
readme = here / "README.md"

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    keywords=cfg["keywords"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    license="Apache-2.0",
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"].title(),
        "License :: OSI Approved :: Apache Software License",
        "Natural Language :: " + cfg["language"].title(),
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    url=cfg["git_url"],
    packages=setuptools.find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    # the trained sweep, ablation grid and video demo (float16 weights, tables, sample grids, example clips) that the
    # explorers and notebooks read
    package_data={cfg["lib_path"]: ["assets/sweep/*", "assets/ablations/*", "assets/video/*"]},
    install_requires=requirements,
    extras_require={"dev": dev_requirements},
    python_requires=">=" + cfg["min_python"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else cfg["description"],
    long_description_content_type="text/markdown",
    zip_safe=False,
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
)
