"""`cnnviewer synthesize`: an image made by gradient ascent (pixel space with a preset of natural-image
regularizers, or Fourier space) or by DeepDream, written as PNG with a JSON of everything needed to
make it again; `--from OUT.json` does (bit-identical on the same CPU)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnviewer.cli.common import Parser, UsageError, int_in, model_options
from cnnviewer.engine.synthesis.recipe_check import (
    FACET_COUNT,
    METHODS,
    PRESET,
    SEED,
    SIZE,
    STEPS,
    TOP,
    RecipeError,
    check_recipe,
)
from cnnviewer.engine.synthesis.settings import STYLE_BACKBONES


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer synthesize", description="Synthesize an image that maximises a class, "
                    "a channel or a neuron (gradient ascent), amplify a layer in a photo (DeepDream), or paint a photo "
                    "in another's style (style transfer).")
    parser.add_argument("--from", dest="replay", help="a JSON written by an earlier run: make that image again")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-class", type=int_in(0), help="a class: its pre-softmax score")
    target.add_argument("--layer", help="a layer (dotted name): a channel's mean, a neuron, or (DeepDream) all of it")
    parser.add_argument("--channel", type=int_in(0))
    parser.add_argument("--neuron", type=int_in(0), nargs=2, metavar=("Y", "X"))
    parser.add_argument("--method", choices=METHODS, default="fourier",
                        help="default fourier (Lucid's transforms: recognisable images, as the panel's default)")
    parser.add_argument("--preset", type=int_in(*PRESET),
                        help="ascent and facets: Yosinski et al. 2015's Table 1 settings (ascent's default 3: decay 1e-4, "
                        "blur 1.0 every 4; facets' default: Nguyen et al. 2016's total variation 3e-4 and jitter 8)")
    parser.add_argument("--steps", type=int_in(*STEPS), help="default: the preset's (ascent), 512 (fourier), "
                        "10 per octave (deepdream)")
    parser.add_argument("--size", type=int_in(*SIZE), help="pixels (default: the model's input size)")
    parser.add_argument("--seed", type=int_in(*SEED), default=0)
    parser.add_argument("--image", help="deepdream: the photo to start from")
    parser.add_argument("--folder", help="facets: a folder of images (indexed first when needed)")
    parser.add_argument("--facets", type=int_in(*FACET_COUNT), default=4, help="facets: how many (k-means clusters)")
    parser.add_argument("--top", type=int_in(*TOP), default=150, help="facets: the unit's top images clustered")
    parser.add_argument("--content", help="style: the photo whose content is kept")
    parser.add_argument("--style", help="style: the image whose style (Gram matrices) is taken")
    parser.add_argument("--backbone", choices=STYLE_BACKBONES, default="auto", help="style: whose features "
                        "(auto: a VGG whose weights are on disk, else the current model)")
    parser.add_argument("--content-layer", default="", help="style: default relu4_2 (VGG) or one the model's")
    parser.add_argument("--style-layers", default="", help="style: comma-separated (default relu1_1,…,relu5_1)")
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="style (default L-BFGS)")
    parser.add_argument("-o", "--output", required=True, help="PNG to write (and OUT.json beside it)")
    model_options(parser)
    return parser


def _recipe(args: argparse.Namespace) -> dict:
    """What the run is, from the arguments, or read back from --from; every field checked with the
    flags' own bounds before anything runs (a recipe is a file people share)."""
    recipe = _replayed(args.replay) if args.replay else _from_flags(args)
    try:
        return check_recipe(recipe)
    except RecipeError as error:
        raise UsageError(f"cnnviewer synthesize: {args.replay or 'the flags'}: {error}") from None


def _replayed(path: str) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:   # RecursionError: a JSON nested thousands deep
        raise UsageError(f"cnnviewer synthesize: {path}: not a readable recipe ({error.__class__.__name__})") from None


def _from_flags(args: argparse.Namespace) -> dict:
    if args.method == "style":
        if not (args.content and args.style):
            raise UsageError("cnnviewer synthesize: style needs --content IMG and --style IMG")
        return {"method": "style", "target": None, "steps": args.steps, "size": args.size, "seed": args.seed,
                "image": str(Path(args.content).resolve()), "style_image": str(Path(args.style).resolve()),
                "style": {"backbone": args.backbone, "content_layer": args.content_layer,
                          "style_layers": args.style_layers, "optimizer": args.optimizer},
                "model": args.model, "weights": args.weights}
    if args.target_class is None and args.layer is None:
        raise UsageError("cnnviewer synthesize: give --target-class N or --layer NAME (or --from a JSON)")
    if args.method != "deepdream" and args.layer is not None and args.channel is None:
        raise UsageError("cnnviewer synthesize: --layer needs --channel (all of a layer is DeepDream's objective)")
    if args.method == "deepdream" and not args.image:
        raise UsageError("cnnviewer synthesize: deepdream needs --image")
    if args.method == "facets" and not args.folder:
        raise UsageError("cnnviewer synthesize: facets needs --folder (the images whose clusters are the facets)")
    return {"method": args.method, "target": {"class_index": args.target_class, "layer": args.layer,
                                              "channel": args.channel, "neuron": args.neuron},
            "preset": args.preset, "steps": args.steps, "size": args.size, "seed": args.seed,
            "image": str(Path(args.image).resolve()) if args.image else None,
            "folder": str(Path(args.folder).resolve()) if args.folder else None, "facets": args.facets,
            "top": args.top,
            "model": args.model, "weights": args.weights}


def _engine(recipe: dict, model):
    """The synthesis run the recipe describes, and its settings."""
    from dataclasses import replace

    from cnnviewer.engine.synthesis.recipe import (
        SETTINGS,
        make_engine,
        settings_of,
        target_of,
    )
    from cnnviewer.engine.synthesis.settings import FACETS, preset

    method, saved = recipe["method"], recipe.get("settings")
    if saved:
        settings = settings_of(method, saved)
    elif method in ("ascent", "facets"):
        size = recipe.get("size") or model.preprocess.crop_size
        settings = replace(FACETS, size=size, seed=recipe["seed"]) if method == "facets" and not recipe.get(
            "preset") else preset(recipe.get("preset") or 3, size=size, seed=recipe["seed"])
    else:
        settings = SETTINGS[method](seed=recipe["seed"], **recipe.get("style", {}))
        if method == "style" and recipe.get("size"):
            settings = replace(settings, size=recipe["size"])
        if method == "fourier":
            settings = replace(settings, size=recipe.get("size") or model.preprocess.crop_size)
    if not saved and recipe.get("steps"):
        settings = replace(settings, steps=recipe["steps"])
    if method == "facets":
        return _facets(recipe, model, settings), settings
    image = style = None
    if method in ("deepdream", "style"):
        from cnnviewer.engine.media.images import load_image
        image = load_image(recipe["image"]).pixels
        style = load_image(recipe["style_image"]).pixels if method == "style" else None
    engine = make_engine(method, model, target_of(recipe), settings, image, style)
    return engine, engine.settings


def _facets(recipe: dict, model, settings):
    """The folder's index (built first when needed), the unit's facets, all of them in one batch."""
    import torch

    from cnnviewer.cli.common import stderr_progress
    from cnnviewer.engine.dataset.build import build_index
    from cnnviewer.engine.dataset.index import default_directory
    from cnnviewer.engine.dataset.progress import RateMeter
    from cnnviewer.engine.synthesis.facets import facet_ascent, find_facets
    from cnnviewer.engine.synthesis.recipe import target_of
    meter = RateMeter()
    try:
        index = build_index(recipe["folder"], model, default_directory(recipe["folder"], model),
                            progress=lambda done, total: stderr_progress(done / total, meter(done, total)))
    finally:
        stderr_progress.done()
    target = target_of(recipe)
    found = find_facets(index, model, target, facets=recipe.get("facets") or 4, top=recipe.get("top") or 150,
                        seed=settings.seed)
    for number, members in enumerate(found.members):
        print(f"facet {number + 1}: {len(members)} images, e.g. {', '.join(index.path(r).name for r in members[:3])}")
    return facet_ascent(model, target, found, settings, threads=torch.get_num_threads())   # the recipe's


def _model_of(args: argparse.Namespace, recipe: dict) -> str | None:
    """The model to build: the command line's, else the recipe's, unless the recipe's runs code.

    A recipe is a file people share: one that names an architecture file (`FILE.py:NAME`) must not
    import it. The user names that file on this command line to run it (`--trust`, likewise, covers
    only a weights file named with `--weights`, never one the recipe names)."""
    from cnnviewer.engine.models.loading import names_code
    if args.model:
        return args.model
    named = recipe.get("model")
    if isinstance(named, str) and names_code(named):
        raise UsageError(f"cnnviewer synthesize: {args.replay} names the architecture file {named}, which runs "
                         "code: nothing was imported; add --model FILE.py:NAME naming that file if you trust it")
    return named


def run(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from cnnviewer.cli.common import load_model_and_image, stderr_progress
    from cnnviewer.engine.dataset.index import weights_digest
    from cnnviewer.engine.media.files import writable_target
    from cnnviewer.engine.synthesis.recipe import record as make_record
    from cnnviewer.engine.synthesis.recipe import save, target_of, total_steps

    writable_target(args.output)
    recipe = _recipe(args)
    side = SimpleNamespace(image=None, model=_model_of(args, recipe), weights=args.weights or recipe.get("weights"),
                           labels=args.labels, trust=args.trust and bool(args.weights), device=args.device,
                           precision=args.precision)
    model, _ = load_model_and_image(side, need_image=False)
    digest = weights_digest(model)
    if recipe.get("weights_sha256") and recipe["weights_sha256"] != digest:
        print("cnnviewer: warning: these weights differ from the recipe's; the image will differ", file=sys.stderr)
    import numpy as np
    import torch
    threads = torch.get_num_threads()
    # As the recipe's run, from the first sum on (style targets, facets): float sums split by thread.
    torch.set_num_threads(recipe.get("torch_threads") or threads)    # checked: 1..256
    try:
        engine, settings = _engine(recipe, model)
        total = total_steps(engine)
        while engine.step < total:
            engine.run(min(10, total - engine.step))
            stderr_progress(engine.step / total, f"step {engine.step}/{total}  objective {float(engine.objective()[0]):.4g}")
        record = make_record(recipe["method"], target_of(recipe), settings, model, digest, engine, recipe.get("image"),
                             recipe.get("style_image"))
        pictures = engine.pictures()
    finally:
        stderr_progress.done()
        torch.set_num_threads(threads)
    if recipe["method"] == "facets":
        record.update(folder=recipe["folder"], facets=recipe.get("facets"), top=recipe.get("top"),
                      objectives=[float(v) for v in engine.objective()])
    save(args.output, pictures[0] if len(pictures) == 1 else np.concatenate(list(pictures), axis=1), record)
    what = "loss" if recipe["method"] == "style" else "objective"
    print(f"{args.output}: {what} {record['objective']:.4g} after {engine.step} steps")
    return 0
