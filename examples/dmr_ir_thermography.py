"""DMR-IR breast thermograms: healthy vs sick, grouped by patient.

Layout ``<root>/<class>/<patient id>/<images>`` (see
data_manifests/dmr_ir.md). Curvelet statistics + SVM as in the
thermogram curvelet-texture papers, against ConvNet+SVM.

    python examples/dmr_ir_thermography.py path/to/dmr-ir
"""

from _common import parse_args, run

from featurepipe.datasets import load_dmr_ir

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], "FEATUREPIPE_DMR_IR",
                      ["curvelet_svm", "convnet_svm_linear", "firstorder_glcm_svm"])
    run(load_dmr_ir(args.root), args)
