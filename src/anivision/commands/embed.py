"""``anivision embed``: embeddings of a whole image collection, in resumable shards.

Run it plainly, or under ``torchrun --nproc_per_node N -m anivision.cli embed ...``: each rank
embeds its own shards (gloo on CPU, NCCL on GPUs), then rank 0 merges them.
"""

from __future__ import annotations

import argparse

from anivision.commands import add_shared
from anivision.engine.distributed import device_for, init_distributed
from anivision.tasks.embed import embed_collection, embedding_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed``."""
    p = subparsers.add_parser(
        "embed", help="embeddings of a whole image collection (resumable shards; torchrun: one rank per shard)",
        description="Embed every image of DATA into OUT/embeddings.npy + OUT/paths.csv (collection order), in shards "
        "that a rerun after a kill skips. Under 'torchrun --nproc_per_node N -m anivision.cli embed ...' each rank "
        "embeds its own shards.",
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="image files, folders (recursively) or glob patterns")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--run", metavar="RUN", help="a classification, few-shot or retrieval run folder: its embedding model (default: none: --backbone)")
    g.add_argument("--backbone", help="without --run: any timm model name (default: tf_efficientnet_lite0)")
    p.add_argument("--weights", help="with --backbone: imagenet | none | efficientnet_lite0_imagenet | FILE "
                   "(default: efficientnet_lite0_imagenet)")
    add_shared(p, "--img-size", default_text="the run's, else 128")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard (the unit of resuming and of a rank's work)")
    add_shared(p, "--batch-size", default=64)
    add_shared(p, "--device")
    add_shared(p, "--out", "the folder of embeddings.npy, paths.csv and the shards", required=True, metavar="DIR")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    info = init_distributed()
    source = embedding_source(args.run, args.backbone, args.weights, args.img_size, str(device_for(info, args.device)))
    data = args.data[0] if len(args.data) == 1 else args.data
    r = embed_collection(data, args.out, source, args.shard_size, args.batch_size, info, progress=not args.quiet)
    if info.is_main:
        print(f"{r['count']} image(s) ({r['unreadable']} unreadable) in {r['shards']} shard(s), {r['dim']}-d "
              f"{source.name} embeddings -> {r['out']}/embeddings.npy + paths.csv")
    return 0
