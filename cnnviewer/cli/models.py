"""`cnnviewer models`: every torchvision classification model by family, with where its weights come from."""

from __future__ import annotations

import argparse

from cnnviewer.cli.common import Parser


def parser() -> argparse.ArgumentParser:
    return Parser(prog="cnnviewer models", description="List the classification models.")


def run(_args: argparse.Namespace) -> int:
    from cnnviewer.engine.models.catalogue import catalogue, catalogue_status

    for family, names in catalogue().items():
        print(family)
        for name in names:
            print(f"  {name:28s} {catalogue_status(name)}")
    return 0
