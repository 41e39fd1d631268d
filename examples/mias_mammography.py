"""mini-MIAS mammograms: benign vs malignant regions of interest.

Patches centred on the documented abnormalities (Info.txt; origin at the
bottom-left), the two breasts of one woman kept in one fold (Suckling et al.,
1994). Texture + SVM and ConvNet+SVM on CLAHE-enhanced patches.

    python examples/mias_mammography.py path/to/mini-mias [--task normal-abnormal]
"""

import sys

from _common import parse_args, run

from featurepipe.datasets import load_mias

if __name__ == "__main__":
    task = "benign-malignant"
    if "--task" in sys.argv:
        i = sys.argv.index("--task")
        task = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    args = parse_args(__doc__.splitlines()[0], "FEATUREPIPE_MIAS",
                      ["convnet_svm_linear", "firstorder_glcm_svm", "lbp_svm", "curvelet_svm"])
    run(load_mias(args.root, task=task, unit="patch", patch_size=128), args, preprocessing="clahe")
