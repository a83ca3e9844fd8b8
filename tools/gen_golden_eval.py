"""Golden outputs for the evaluation protocols (crates/clip-eval/tests/golden.rs).

  probe.safetensors      scikit-learn's digits (real 8×8 images, 64 features scaled to [0, 1]) split
                         1,200 train / 597 test, and LogisticRegression(lbfgs) fits at C = 0.05 and 1.0:
                         coefficients, intercepts and accuracies at the default tol 1e-4 and at tol 1e-8
  retrieval.safetensors  random L2-normalised image (30) and caption (3–5 per image, 127) embeddings and
                         CLIP_benchmark's recall@1/5/10 in both directions (its own `recall_at_k`)
  metrics.safetensors    random scores for 200 samples × 7 classes; scikit-learn's confusion matrix,
                         balanced accuracy and top-k accuracy
  zeroshot.safetensors   open_clip's `build_zero_shot_classifier` (its 80 OpenAI ImageNet templates, its
                         tokenizer) over 12 class names with the tiny transformers CLIP in
                         testdata/models/hf_vit as the text tower

    python tools/gen_golden_eval.py testdata/eval
"""
import os
import sys

import numpy as np
import sklearn
import torch
from safetensors.numpy import save_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, top_k_accuracy_score
from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k

out = sys.argv[1] if len(sys.argv) > 1 else "testdata/eval"
os.makedirs(out, exist_ok=True)

# --- probe ---
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
rng = np.random.default_rng(0)
perm = rng.permutation(len(y))
tr, te = perm[:1200], perm[1200:]
t = {"train_x": X[tr], "train_y": y[tr].astype(np.int64), "test_x": X[te], "test_y": y[te].astype(np.int64)}
for name, C in [("c005", 0.05), ("c1", 1.0)]:
    for tol_name, tol in [("default", 1e-4), ("tight", 1e-8)]:
        m = LogisticRegression(C=C, max_iter=1000, tol=tol).fit(X[tr], y[tr])
        key = f"{name}_{tol_name}"
        t[f"{key}_coef"] = np.ascontiguousarray(m.coef_, dtype=np.float32)
        t[f"{key}_intercept"] = np.ascontiguousarray(m.intercept_, dtype=np.float32)
        t[f"{key}_test_acc"] = np.array([(m.predict(X[te]) == y[te]).mean()], dtype=np.float64)
        t[f"{key}_proba"] = np.ascontiguousarray(m.predict_proba(X[te]), dtype=np.float32)
        t[f"{key}_iterations"] = np.array([m.n_iter_[0]], dtype=np.int64)
save_file(t, os.path.join(out, "probe.safetensors"))

# --- retrieval ---
g = torch.Generator().manual_seed(5)
n_img = 30
counts = [3 + (i % 3) for i in range(n_img)]  # 3, 4 or 5 captions
text_image = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)])
img = torch.nn.functional.normalize(torch.randn(n_img, 16, generator=g), dim=-1)
# captions near their image so that recall is neither 0 nor 1
txt = torch.nn.functional.normalize(img[text_image] + 1.2 * torch.randn(len(text_image), 16, generator=g), dim=-1)
scores = txt @ img.t()
positive = torch.zeros_like(scores, dtype=torch.bool)
positive[torch.arange(len(scores)), text_image] = True
r = {"image_emb": img.numpy(), "text_emb": txt.numpy(), "text_image": text_image.numpy().astype(np.int64)}
for k in (1, 5, 10):
    r[f"text_to_image_r{k}"] = np.array([(recall_at_k(scores, positive, k) > 0).float().mean().item()])
    r[f"image_to_text_r{k}"] = np.array([(recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()])
save_file(r, os.path.join(out, "retrieval.safetensors"))

# --- classification metrics ---
s = rng.normal(size=(200, 7)).astype(np.float32)
truth = rng.integers(0, 7, 200)
truth[truth == 6] = 5  # class 6 never occurs: excluded from the balanced accuracy
s[np.arange(200), truth] += 0.8
pred = s.argmax(1)
save_file({"scores": s, "truth": truth.astype(np.int64),
           "confusion": np.ascontiguousarray(confusion_matrix(truth, pred, labels=range(7)), dtype=np.int64),
           "balanced_accuracy": np.array([balanced_accuracy_score(truth, pred)]),
           "top1": np.array([top_k_accuracy_score(truth, s, k=1, labels=range(7))]),
           "top3": np.array([top_k_accuracy_score(truth, s, k=3, labels=range(7))])},
          os.path.join(out, "metrics.safetensors"))
# --- zero-shot classifier ---
import json  # noqa: E402

import open_clip  # noqa: E402
from open_clip.zero_shot_classifier import build_zero_shot_classifier  # noqa: E402
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # noqa: E402
from transformers import CLIPModel  # noqa: E402

hf = CLIPModel.from_pretrained(os.path.join(os.path.dirname(out), "models", "hf_vit"), dtype=torch.float32).eval()


class TextTower:
    """open_clip's `encode_text(texts, normalize)` on the transformers model."""

    def encode_text(self, texts, normalize=False):
        f = hf.get_text_features(input_ids=texts)
        f = f if torch.is_tensor(f) else f.pooler_output
        return torch.nn.functional.normalize(f, dim=-1) if normalize else f


classes = ["dog", "cat", "goldfish", "great white shark", "Tabby Cat", "café au lait", "jack-o'-lantern",
           "traffic light", "a very long class name that goes on and on and on and on and on and on and on and on",
           "tree frog", "🐶 emoji", "fire truck"]
w = build_zero_shot_classifier(TextTower(), open_clip.tokenizer.tokenize, classes, OPENAI_IMAGENET_TEMPLATES,
                               num_classes_per_batch=5)
save_file({"classifier": np.ascontiguousarray(w.T.numpy(), dtype=np.float32)}, os.path.join(out, "zeroshot.safetensors"),
          metadata={"classes": json.dumps(classes), "templates": json.dumps([t("{}") for t in OPENAI_IMAGENET_TEMPLATES])})
import clip_benchmark  # noqa: E402
print(f"wrote {out} (scikit-learn {sklearn.__version__}, torch {torch.__version__}, clip_benchmark {getattr(clip_benchmark, '__version__', '1.6.2')})")
