"""Guided tour: a short narrated path through the dashboard on the bundled ResNet-20, one idea per step, each
with something to try and a link to the page where it lives."""
from dataclasses import dataclass

import streamlit as st

from pages.ui.router import through_router
from pages.ui.tour_figures import tour_figure

STEP = "tour_step"


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    tries: tuple[str, ...]
    page: str
    link: str
    icon: str
    source: str = ""  # the paper behind the idea, and what prunekit reconstructs of it
    figure: str = ""  # a key of pages.ui.tour_figures.FIGURES: the step's page's chart, full width


STEPS = (
    Step("Filters and feature maps",
         "A convolution layer is a bank of **filters**: each is a small stack of 3x3 kernels, one per input channel, "
         "that slides over the image. What one filter answers at every position is its **feature map**: a small "
         "image that lights up where the filter finds its pattern (an edge, a colour, later a wheel or an eye). "
         "The bundled ResNet-20 has 19 such layers with 16, 32 or 64 filters each. **Filter pruning** removes "
         "whole filters, together with their feature maps, so the network gets truly smaller and faster.",
         ("Open Feature maps, pick layer1.0.conv1 and look at the 16 maps of one image: which ones look alike, "
          "which ones are nearly blank?",),
         "pages/feature_maps.py", "Feature maps", ":material/grid_view:",
         figure="maps"),
    Step("Where the cost sits",
         "Before pruning anything, see what it costs: the Model & data page counts the parameters (0.27M) and the "
         "multiply-adds per image (40.55M MACs) layer by layer. Early layers work on 32x32 maps, so they cost "
         "compute; the last stage holds most of the weights. Removing a filter shrinks its own layer and the input "
         "side of the next one, so where you prune decides what you save.",
         ("Compare the compute bar of layer1.0.conv1 with that of layer3.2.conv2: which one would you prune to "
          "save FLOPs, which one to save memory?",),
         "pages/model.py", "Model & data", ":material/memory:",
         figure="cost"),
    Step("Saliency: how much a filter says",
         "A saliency criterion gives every filter a score: higher means more important. Norm criteria (L1, FPGM) "
         "read only the weights; information criteria read the feature maps over a probe set of training images. "
         "The **entropy** of a filter's response says how much information it carries: a filter whose map is "
         "nearly the same for every image tells the next layer almost nothing, and can go first. The Saliency page "
         "draws every layer's score distribution and lets you change each criterion's parameters.",
         ("Score the model by sfm_entropy, then by l1: do the two agree on which filters are weakest "
          "(the rank-agreement view)?",
          "Read the help of each criterion: it says what comes from the paper and what prunekit reconstructs."),
         "pages/saliency.py", "Saliency", ":material/bar_chart:",
         "SFM, 'saliency of the feature map' (the abstract at hand names no authors or year): the entropy of a "
         "filter's feature map is its importance, low-entropy filters early in "
         "training are pruned. prunekit reconstructs the estimator (by default a 32-bin histogram of every value "
         "of the map over the probe images, read after the residual add where there is one: chosen because its "
         "ranking is the most reproducible, which the Saliency page shows as each layer's reliability). Map-EX "
         "(its abstract names no authors or year either) keeps filters that respond on the "
         "objects' boxes more than on the background; linear filter ensembles (Sandor et al. 2020, "
         "arXiv 2001.08142) fit the loss of random filter masks. The box-to-map mapping, the box-labelled probe "
         "set, the mask sampling and the ridge fit are reconstructions.",
         figure="scores"),
    Step("Feature maps up close",
         "Numbers are easier to trust once you have seen them. The Feature maps page shows every map of a layer for "
         "one image, sorted by score, with the filters a plan would remove marked. Low-scoring maps are often flat "
         "or repeat a neighbour; high-scoring ones respond to parts of the object. Deeper layers have smaller maps "
         "(8x8 in stage 3) that answer more abstract patterns.",
         ("Switch the image and watch which maps stay flat: those are the low-entropy filters.",),
         "pages/feature_maps.py", "Feature maps", ":material/grid_view:",
         figure="deep_maps"),
    Step("Correlations: redundancy",
         "A filter can be strong and still useless if another filter already says the same thing. The Correlations "
         "page draws the |Pearson| correlation of every pair of filters in a layer, of their weights or of their "
         "feature maps, in clustering order so that redundant groups form red blocks. Click a square to set the two "
         "filters side by side.",
         ("On layer1.0.conv1, click the darkest off-diagonal square: do the two feature maps look alike?",),
         "pages/correlations.py", "Correlations", ":material/blur_on:",
         "Information capacity and independence (Tang et al. 2023, arXiv 2303.03645): capacity is an entropy "
         "computed from the weights, independence the filter's lack of correlation with its layer. prunekit "
         "reconstructs both (a weight histogram entropy; the mean of 1 - |r|) and their sum after min-max scaling.",
         figure="correlation"),
    Step("Plan & prune",
         "A plan gives each layer a ratio of filters to remove; the chosen criterion picks which ones. In a ResNet, "
         "the convs that feed one residual stream must keep the same channels, so they are pruned together as one "
         "coupled group (ResNet-20 has 12 groups, 3 of them coupled). Presets set the ratios for you (uniform, a "
         "global threshold, AFIE), and the estimate of parameters and FLOPs updates instantly as you move a slider; "
         "pruning then builds the real smaller model and records it as a run.",
         ("Ask the threshold preset for half the FLOPs, then prune: compare the estimate with the measured run.",),
         "pages/plan.py", "Plan & prune", ":material/tune:",
         "AFIE (Lu et al. 2022, arXiv 2208.06660; AAAI 2024): an entropy of each layer's normalised singular "
         "values sets how much of the layer to prune. prunekit reconstructs the matrix (kernels averaged over "
         "3x3), the normalisation and the ratio allocation; it shows that AFIE depends mostly on the layer's shape.",
         figure="plan"),
    Step("Fine-tune and jobs",
         "Right after pruning, accuracy drops; a few epochs of fine-tuning recover most of it. Fine-tuning runs as a "
         "background job, so the dashboard stays usable: the Jobs page shows its progress, lets you cancel it, and "
         "writes the accuracy of each epoch into the run. On a laptop CPU an epoch of CIFAR-10 takes minutes; on a "
         "GPU, seconds.",
         ("Start a 2-epoch fine-tuning of your run and watch its curve on the Jobs page.",),
         "pages/jobs.py", "Jobs", ":material/pending_actions:",
         "SFM recovers accuracy with an over-parameterized convolution (DO-Conv, Cao et al. 2020) that "
         "is folded back into a plain conv for inference; prunekit implements the folding from DO-Conv's paper.",
         figure="training"),
    Step("Compare: the Pareto front",
         "Every run lands on one chart: accuracy against FLOPs, parameters or measured latency. A run is on the "
         "**Pareto front** when no other run is both cheaper and more accurate; the rest are beaten and can be "
         "forgotten. The dotted line marks the unpruned model, so you can read the price of each saving. Click a "
         "run to see its channels and fine-tuning curve, download its report, or load its plan back into the editor.",
         ("Prune twice at the same FLOPs with two criteria and see which one lands higher.",),
         "pages/compare.py", "Compare runs", ":material/scatter_plot:",
         "To set beside your runs, published CIFAR-10 results: SFM claims -83.3% parameters and -66.7% FLOPs for "
         "-0.39% top-1 on VGG-16; HRank (Lin et al. 2020) takes ResNet-56 from 93.26% to 93.17% at -50% FLOPs. "
         "Those are the papers' numbers, not reproduced by prunekit.",
         figure="compare"),
)


def step_view(k: int, step: Step, key: str) -> None:
    """One step: its text, its page's chart below at full width (legible on a projector), what to try, where the
    idea comes from, and a link to its page (``key`` tells the current step's chart from the same chart under "Show
    all steps")."""
    st.subheader(f"{k + 1}. {step.title}")
    st.markdown(step.text)
    tour_figure(step.figure, key=f"tour_fig_{key}_{k}")
    st.markdown("**What to try**\n" + "\n".join(f"- {t}" for t in step.tries))
    if step.source:
        st.caption(f":material/menu_book: {step.source}")
    st.page_link(step.page, label=f"Open {step.link}", icon=step.icon)


def _move(delta: int) -> None:
    st.session_state[STEP] = min(max(st.session_state.get(STEP, 0) + delta, 0), len(STEPS) - 1)


def navigation(k: int) -> None:
    st.progress((k + 1) / len(STEPS), text=f"Step {k + 1} of {len(STEPS)}: {STEPS[k].title}")
    prev, _, nxt = st.columns([1, 4, 1])
    prev.button("Previous", icon=":material/arrow_back:", disabled=k == 0, on_click=_move, args=(-1,),
                key="tour_prev", width="stretch")
    nxt.button("Next", icon=":material/arrow_forward:", disabled=k == len(STEPS) - 1, on_click=_move, args=(1,),
               key="tour_next", width="stretch", type="primary")


through_router()
st.title("Guided tour")
st.caption("Eight short steps through the dashboard on the bundled ResNet-20 (CIFAR-10): from what a filter is to "
           "choosing the best pruned model.")
k = min(max(int(st.session_state.get(STEP, 0)), 0), len(STEPS) - 1)
navigation(k)
with st.container(border=True):
    step_view(k, STEPS[k], "current")
if k == 0:  # said once, where the tour starts; each step's source line says what is reconstructed
    st.info("The ideas come from five papers of which only the abstracts were available (no full text, no code). "
            "Where an abstract is silent, prunekit fills the gap with a documented reconstruction whose choices are "
            "parameters you can change; each criterion's help on the Saliency page says which part is which.",
            icon=":material/info:")
with st.expander("Show all steps"):
    for i, s in enumerate(STEPS):
        step_view(i, s, "all")
