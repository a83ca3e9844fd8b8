"""Export the per-dataset zero-shot templates of OpenAI's prompt-engineering notebook (as packaged,
MIT-licensed, by CLIP_benchmark: `clip_benchmark/datasets/en_zeroshot_classification_templates.json`)
and the class names that package ships (`en_classnames.json`) into configs/templates/ and
configs/classes/, one item per line, `{c}` written as `{}`. Prints the Rust table for
`crates/clip-cli/src/classify.rs`.

    pip install --no-deps clip-benchmark==1.6.2
    python tools/gen_templates.py
"""
import json
import os

import clip_benchmark

ROOT = os.path.join(os.path.dirname(__file__), "..")
src = os.path.join(os.path.dirname(clip_benchmark.__file__), "datasets")
templates = json.load(open(os.path.join(src, "en_zeroshot_classification_templates.json")))
classnames = json.load(open(os.path.join(src, "en_classnames.json")))

# the datasets of the paper's zero-shot evaluation (Table 11 / the prompt notebook)
DATASETS = ["cifar10", "cifar100", "food101", "sun397", "cars", "fgvc_aircraft", "dtd", "pets", "caltech101",
            "flowers", "mnist", "stl10", "eurosat", "gtsrb", "country211", "renderedsst2", "fer2013", "pcam",
            "resisc45", "kitti_closest_vehicle_distance", "clevr_count_all", "voc2007"]
rows = []
for name in DATASETS:
    t = [x.replace("{c}", "{}") for x in templates[name]]
    assert all("{}" in x for x in t), name
    with open(os.path.join(ROOT, "configs/templates", f"{name}.txt"), "w") as f:
        f.write("\n".join(t) + "\n")
    rows.append(f'    ("{name}", include_str!("../../../configs/templates/{name}.txt")),')
    if name in classnames:
        with open(os.path.join(ROOT, "configs/classes", f"{name}.txt"), "w") as f:
            f.write("\n".join(classnames[name]) + "\n")
print("\n".join(rows))
