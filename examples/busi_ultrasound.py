"""BUSI breast ultrasound, 3 classes (normal / benign / malignant).

Reproduces the ConvNet+SVM and handcrafted-texture comparisons on BUSI
(Al-Dhabyani et al., Data in Brief 28 (2020) 104863; the published 3-class
MobileNetV2 transfer-learning reference is accuracy 0.82, MCC 0.74,
ROC-AUC 0.94). Near-duplicate images are grouped so they never straddle
folds; features ignore the expert lesion masks (a test image has none).

    python examples/busi_ultrasound.py ../shared/data/busi
    FEATUREPIPE_BUSI=../shared/data/busi python examples/busi_ultrasound.py
"""

from _common import parse_args, run

from featurepipe.datasets import load_busi

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], "FEATUREPIPE_BUSI",
                      ["convnet_svm_linear", "convnet_svm_rbf", "convnet_elm", "convnet_rf",
                       "firstorder_glcm_svm", "lbp_svm", "hog_svm", "curvelet_svm"])
    run(load_busi(args.root), args, preprocessing="median")
