"""How to read each figure of a run against the paper's findings F1–F6, as short HTML texts.

``FIGURES`` maps a figure's file stem (``figures/<stem>.png``) to its title and caption; ``READING``
holds the longer "what to look for" paragraphs shown once per subsection; ``CKA_CALIBRATION`` and
``SIMILARITY_CALIBRATION`` caption the tables of the intervals and nulls of CKA and of the other similarity measures.
"""

FIGURES: dict[str, tuple[str, str]] = {
    "attention_distance": (
        "Averaged attention distance",
        "One dot per head: the attention-weighted distance in input pixels between a query token and the "
        "keys it attends to, averaged over queries and images. The dashed line is uniform attention over "
        "the same keys.",
    ),
    "attention_entropy": (
        "Attention entropy",
        "One dot per head: the mean entropy (nats) of its attention rows. The dashed line is uniform "
        "attention, ln(number of keys), the highest value possible.",
    ),
    "head_kl": (
        "Head diversity",
        "Small dots: KL divergence between the attention distributions of two heads of one layer (every "
        "ordered pair), averaged over queries and images; large dots: the layer mean. 0 means all heads "
        "attend alike.",
    ),
    "diagnostics_nmi": (
        "Attention NMI",
        "One dot per head: the normalised mutual information between query and key position of its attention "
        "(0: every query attends alike, 1: each query to its own key), per image (per window for Swin), averaged. "
        "The dashed line is uniform attention over the same keys.",
    ),
    "diagnostics_high_frequency": (
        "High-frequency share of features",
        "Per block: the share of the 2-D Fourier amplitude of each channel's patch-token map outside the low band "
        "(both frequencies at most the cutoff times π), averaged over channels and images.",
    ),
    "diagnostics_high_norm": (
        "High-norm tokens",
        "Left: patch tokens per image whose output norm is an outlier (modified z-score above 3.5 against the "
        "block's median and MAD over all images). Right: where they sit, in the block with the most of them "
        "(the fraction of images with one at each position).",
    ),
    "cka_within": (
        "CKA between layers",
        "CKA between the representations of every pair of blocks of one model on the same images "
        "(1 = the same up to rotation and scale).",
    ),
    "similarity_within": (
        "Similarity between blocks",
        "Mutual k-NN, CKNNA, SVCCA, PWCCA, RSA (1 = the same) and the Procrustes angle (0 = the same up to "
        "rotation) between every pair of blocks of one model, on one pooled feature vector per image.",
    ),
    "similarity_across": (
        "Similarity between models",
        "The same measures between each block of one model (rows) and each block of another (columns), on the "
        "same raw images in the same order, each model with its own preprocessing.",
    ),
    "cka_across": (
        "CKA between models",
        "CKA between each block of one model (rows) and each block of another (columns), computed on the "
        "same raw images in the same order, each model with its own preprocessing.",
    ),
    "avgdist": (
        "AvgDist of masking settings",
        "AvgDist: the mean distance in pixels from a masked pixel to the nearest visible one, averaged over "
        "masked pixels and many random masks.",
    ),
    "training_curves": (
        "Training curves",
        "Values logged in <code>log.jsonl</code> against the optimisation step (means over the steps since "
        "the previous line).",
    ),
    "reconstruction": (
        "SimMIM reconstruction",
        "Input, mask and the prediction on the masked patches for a few images.",
    ),
    "mask_examples": (
        "Example masks",
        "One random SimMIM mask per setting laid over a bundled photo (masked blocks darkened).",
    ),
    "probe_by_layer": (
        "Frozen probes by block",
        "One panel per task: the task's primary metric of a probe trained on the frozen features of each block "
        "(ridge regression; tracking: training-free correlation), ±1 standard error, the trivial baselines dashed.",
    ),
    "attention_over_training": (
        "Attention over training",
        "Per layer (light: first, dark: last) the mean over its heads of the attention distance, the entropy and "
        "the KL between heads, at every saved checkpoint of the training run.",
    ),
    "layer_drop": (
        "Dropping the last blocks",
        "Downstream metric against the number of last blocks removed before fine-tuning.",
    ),
    "transfer": (
        "Fine-tuning from each initialisation (F6)",
        "The primary metric of each task after fine-tuning each pre-trained model and the random-init one "
        "with the same recipe.",
    ),
    "training_bars": (
        "Training bars",
        "Left: SimMIM's L1 error on the masked pixels next to filling them with the nearest visible pixel or the "
        "mean colour. Right: the supervised model's top-1 next to chance and the required accuracy.",
    ),
    "block_choice": (
        "Which block to transfer from",
        "One row per model. Left: its per-block diagnostics, each scaled from its smallest (0) to its largest (1) "
        "value over the blocks. Then per task: the frozen-probe score by block (±1 SE), the chosen block starred "
        "(best on the selection half of the items), the blocks within errors of it shaded.",
    ),
}

# The caption of a model's calibrated CKA table (``bootstrap`` and ``permutations`` filled in).
CKA_CALIBRATION = ("Each block against the last: CKA, its 95 % interval over images (percentiles of {bootstrap} "
                   "replicates, each on a random half of the images of every batch), the mean CKA when the images "
                   "of one side are permuted ({permutations} permutations: what unrelated representations give) "
                   "and the p-value of the observed CKA under those permutations.")
# The caption of the calibrated table of mutual k-NN, CKNNA and RSA (``cell``, ``replicates``, ``permutations``).
SIMILARITY_CALIBRATION = ("Mutual k-NN, CKNNA and RSA at {cell}: the value, its 95 % interval (percentiles of "
                          "{replicates} replicates, each on a random half of the images with the same k, so mutual "
                          "k-NN and CKNNA run higher there than on all images: compare intervals between analyses), "
                          "the mean when one side's images are permuted ({permutations} permutations: what unrelated "
                          "representations give) and the p-value of the observed value under them.")

READING: dict[str, str] = {
    "attention_distance": (
        "<b>Against the paper (F1, Fig. 1–2b).</b> A supervised model attends locally in its low layers and "
        "globally in its high layers: there its dots reach the uniform line. A MIM model (SimMIM) keeps local "
        "heads, well under the line, in every layer. Read every layer against the dashed line, never against "
        "zero: an untrained layer attends uniformly and is indistinguishable from a truly global one."
    ),
    "attention_entropy": (
        "<b>Against the paper (F3, Fig. 3).</b> Low entropy means a focused head. In a MIM model the heads of "
        "each layer spread over a wide range of entropies in all layers; in a supervised model the heads of "
        "the last layers crowd together near the uniform line."
    ),
    "head_kl": (
        "<b>Against the paper (F3, Fig. 4).</b> Head diversity nearly vanishes in the last three layers of a "
        "supervised model (KL close to 0) while a MIM model keeps it in every layer. Random initialisation "
        "also gives a KL near 0: compare a trained model with its untrained reference."
    ),
    "diagnostics": (
        "<b>Against the references.</b> Park et al. (2023) find the attention of contrastive models collapsing "
        "in the later blocks (NMI near 0: every query looks at the same keys) while MIM keeps query-dependent "
        "attention, and MIM features richer in high frequencies. Darcet et al. (2024) find a few high-norm patch "
        "tokens in the later blocks of large, long-trained models. Read NMI against the uniform line: a "
        "shifted Swin block has NMI above 0 even for uniform attention, because its mask splits windows."
    ),
    "cka_within": (
        "<b>Against the paper (F5).</b> MIM representations are similar across layers: the whole matrix "
        "stays high. A supervised model shows blocks: its last layers are far from its first ones."
    ),
    "cka_across": (
        "<b>Against the paper (F5).</b> The diagonal shows how far two models agree block by block; models "
        "trained the same way agree along it, a MIM and a supervised model part in the last blocks."
    ),
    "avgdist": (
        "<b>Against the paper (F2, Fig. 2a).</b> Masking settings with a moderate AvgDist (about 10–20 px at "
        "224 px) fine-tune best and give more local attention; too small an AvgDist lets the model copy "
        "neighbouring pixels, too large a one leaves it nothing to infer from. Reference values at 224 px: "
        "mask patch 32, ratio 0.6 → about 15; patch 16, ratio 0.6 → about 7.1; patch 32, ratio 0.9 → about 46."
    ),
    "training": (
        "<b>Reading a training run.</b> The loss should fall steadily after the warm-up. For SimMIM compare "
        "the masked L1 loss with simple fills of the masked pixels (the mean colour, the nearest visible "
        "pixel): locality in the attention only appears once the loss beats them. Track the attention "
        "statistics of the checkpoints with <code>mimlens analyze</code>."
    ),
    "metrics": (
        "<b>Against the paper (F4, F6).</b> MIM beats supervised pre-training on geometric and motion tasks "
        "(depth, pose, tracking) and fine-grained classification and is competitive on well-covered semantic "
        "tasks; dropping the last, low-diversity blocks of a supervised model does not hurt geometric tasks "
        "and can help. Compare runs that differ in one thing only, with the metric variant named."
    ),
    "layer_drop": (
        "<b>Against the paper (F4, Fig. 5).</b> For a supervised model, removing the last blocks, whose heads "
        "have lost their diversity, should not hurt geometric tasks (pose AP, depth RMSE) and can help; for "
        "a MIM model the last blocks still carry diverse heads, so dropping them costs more."
    ),
    "probe": (
        "<b>Against the paper (F4, F6).</b> A block whose features carry geometry (depth, keypoints, tracking) "
        "gives a better probe. A MIM model keeps that information up to its last blocks; in a supervised model "
        "the last blocks lose it while classification peaks there. Read every value against the dashed "
        "baselines: a probe that does not beat them has found nothing."
    ),
    "attention_over_training": (
        "<b>Reading attention over training.</b> At step 0 every layer attends nearly uniformly. With SimMIM the "
        "distance should fall in every layer as training goes on (F1); with supervised training mainly in the "
        "low layers, while the high layers' heads lose their diversity (F3: KL between heads towards 0)."
    ),
    "findings": (
        "Each of the paper's findings next to its verdict, the numbers it was computed from, the <i>rule</i> "
        "that turns them into the verdict (fixed before the run, docs/findings.md) and the figures to check it "
        "against. A verdict is <i>reproduced</i>, <i>not reproduced</i>, <i>within errors</i> (the test could "
        "not tell; the reason gives the smallest difference it could have detected) or <i>not judged</i> (the "
        "reason says why). At tiny scale on a CPU a finding can honestly fail to show: the verdicts say so."
    ),
    "bars": (
        "<b>Why the bars.</b> A verdict is claimed only when the models it compares learned something: SimMIM "
        "must beat copying the nearest visible pixel, the supervised model must clear chance by the margin "
        "its rule states. Below a bar the findings that depend on it are not judged."
    ),
    "block_choice": (
        "<b>Choosing a block.</b> A probe chooses the block with the best score on half of the evaluation items "
        "and is read on the other half: every block within errors of the chosen one is as good a choice as far "
        "as these items tell, and the bootstrap share says how often the choice would fall on the same block "
        "with other items. A diagnostic whose rank correlation with a task's score holds in every model (and "
        "pooled) could choose the block without probing; with a handful of blocks a correlation is weak evidence."
    ),
}
