"""The Plan page's last run: its accuracy at every stage and its cost, a link to Compare, and the form that queues
its fine-tuning (optionally distilled from the unpruned model) as a background job."""
from __future__ import annotations

import streamlit as st

from pages.ui.classroom import may, visitor
from pages.ui.sidebar import device_label, selection
from prunekit.data import list_datasets, locate
from prunekit.defaults import FINETUNE_RECIPE, HELD_OUT, PREDICTION, QUICK_FINETUNE_EPOCHS
from prunekit.runs.finetune import source_on_disk
from prunekit.runs.records import accuracy_summary, read_manifest, runs_root
from prunekit.text import human

BATCH = FINETUNE_RECIPE["batch_size"]
LAST_RUN, LAST_JOB, LAST_JOB_RUN = "last_run", "plan_last_job", "plan_last_job_run"
UNPRUNED_ON = (f"The unpruned model's accuracy is measured on three sets of test images: the whole test split (the "
               f"Model page's, when it was trained), {HELD_OUT.n:,} drawn by seed {HELD_OUT.seed} (every run's "
               f"'before') and the first {PREDICTION.n:,} of those (the live prediction's); a smaller sample reads a "
               "few tenths of a point off the whole split, so each figure names its images.")


def last_run_ui() -> None:
    """The last run of this session: its accuracy and cost, a link to Compare, and the fine-tuning form."""
    run_id = st.session_state.get(LAST_RUN)
    if not run_id:
        return
    path = runs_root() / run_id
    try:
        m = read_manifest(path)
    except ValueError:
        st.warning(f"The last run ({run_id}) is no longer under {runs_root()}.")
        return
    st.success(f"Run **{run_id}** saved ({m['status']}) in `{path}`.", icon=":material/check_circle:")
    acc = {k: (v or {}).get("accuracy") for k, v in (m.get("accuracy") or {}).items()}
    before = acc.get("before")
    cols = st.columns(5)
    cols[0].metric("Accuracy before", "–" if before is None else f"{before:.2f}%",
                   help=f"the unpruned model, top-1 on {(m.get('data') or {}).get('n')} "
                        f"{(m.get('data') or {}).get('name', '')} test images (seed {HELD_OUT.seed}). {UNPRUNED_ON}")
    recal = m.get("recalibration") or {}
    for col, key, name, why in (
            (cols[1], "pruned", "Accuracy after pruning", "right after pruning, before anything else"),
            (cols[2], "recalibrated", "Recalibrated", f"after re-estimating the BatchNorm statistics on "
             f"{recal.get('n')} training images (no weight changed): what fine-tuning starts from, and a far better "
             "predictor of the accuracy after fine-tuning than the plain one")):
        value = acc.get(key)
        if value is None:  # a dash: the words would be cut in a metric's width; the help says why
            why = f"not measured: {recal.get('note') or 'no test images'}" if key == "recalibrated" else \
                "not measured: no test images"
        col.metric(name, "–" if value is None else f"{value:.2f}%",
                   None if value is None or before is None else f"{value - before:+.2f} pts", help=why)
    for col, key, name in ((cols[3], "params", "Parameters after"), (cols[4], "flops", "FLOPs after")):
        a, b = (m.get("after") or {}).get(key), (m.get("before") or {}).get(key)
        if a is None or not b:  # the run stopped before its report
            col.metric(name, "–", help="not measured: the run stopped before pruning")
            continue
        col.metric(name, human(a), f"{a / b - 1:.1%}", delta_color="inverse", help=f"{b:,} -> {a:,}")
    summary = accuracy_summary(m)
    if summary["test_images"]:
        st.caption(f"Each accuracy is top-1 on the same {summary['test_images']:,} test images; the recalibrated "
                   "one " + (f"after re-estimating BatchNorm on {summary['recalibration_images']:,} training images."
                             if summary["recalibration_images"] else
                             f"was not measured: {recal.get('note') or 'no recalibration was asked'}.")
                   + " " + UNPRUNED_ON)
    st.page_link("pages/compare.py", label="Compare this run with the others", icon=":material/scatter_plot:")
    if m["status"] == "done":
        finetune_ui(path, m)


def finetune_ui(run_path, manifest: dict) -> None:
    """The fine-tuning form of the run at ``run_path`` (its ``manifest``: the data set it was measured on, else the
    sidebar's; the unpruned model to distil from), on the Plan page after pruning and on Compare for any run."""
    measured_on = (manifest.get("data") or {}).get("name")
    dataset = measured_on if measured_on in list_datasets() else selection().dataset
    data_path = locate(dataset)
    st.subheader("Fine-tune it in the background")
    st.caption(f"Fine-tuning runs as a job on **{device_label()}**; you can leave this page. On a 2-core CPU "
               "with nothing else running, ResNet-20 fine-tunes (distilling) at about 900 images/s, so one CIFAR-10 "
               "epoch (50,000 images) takes about a minute, several when the machine is busy: a train subset "
               "makes a quick demo.")
    if data_path is None:
        st.warning(f"Fine-tuning trains on the {dataset} training images, and there are none here: the Model & "
                   "data page says how to get them.", icon=":material/folder_off:")
    if not may("queue a fine-tuning (it holds the machine for minutes)"):
        return
    with st.form("finetune"):
        cols = st.columns(4)
        epochs = cols[0].number_input("Epochs", 1, 300, QUICK_FINETUNE_EPOCHS)
        lr = cols[1].number_input("Learning rate", 1e-5, 1.0, FINETUNE_RECIPE["lr"], format="%.4f")
        subset = cols[2].number_input("Train images (0 = all)", 0, 1_000_000, 0, 1000,
                                      help=f"0 or at least {BATCH} (one batch)")
        test_subset = cols[3].number_input("Test images (0 = all)", 0, 1_000_000, 0, 1000,
                                           help="Images the accuracy after each epoch is measured on (seed 0); "
                                                "fewer is quicker, all 10,000 is what the Compare page should "
                                                "compare.")
        kd, teacher, alpha = st.columns(3), source_on_disk(manifest), FINETUNE_RECIPE["distill_alpha"]
        distil = kd[0].toggle("Distil from the unpruned model", alpha > 0 and bool(teacher), disabled=not teacher,
                              help="The pruned model also learns the unpruned one's softened outputs (Hinton et al. "
                                   "2015)" + ("" if teacher else "; the file it was pruned from is not on disk"))
        alpha = kd[1].number_input("Teacher weight (alpha)", 0.0, 1.0, alpha, 0.1)
        temperature = kd[2].number_input("Temperature (T)", 0.1, 20.0, FINETUNE_RECIPE["distill_temperature"], 0.5)
        bf16 = st.toggle("bf16 on the CPU", False, help="Run the loss under bf16 autocast on the CPU too (on CUDA it "
                         "always is): about 1.8x the images/s on a CPU with bf16 units (AVX512-BF16, AMX), slower on "
                         "one without; the same accuracy within seed noise in our check (README, CPU training).")
        submitted = st.form_submit_button("Queue fine-tuning", type="primary", icon=":material/play_arrow:",
                                          disabled=data_path is None)
    if submitted:
        if 0 < subset < BATCH:
            st.error(f"{subset} training images make no batch of {BATCH}: use 0 (all) or at least {BATCH}.")
        else:
            submit_finetune(run_path, dataset, int(epochs), float(lr), int(subset), int(test_subset),
                            float(alpha) if distil else 0.0, float(temperature), "bf16" if bf16 else "auto")
    if st.session_state.get(LAST_JOB) and st.session_state.get(LAST_JOB_RUN) == str(run_path):
        st.success(f"Fine-tuning queued as job {st.session_state[LAST_JOB]}", icon=":material/schedule:")
        st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/pending_actions:")


def submit_finetune(run_path, dataset: str, epochs: int, lr: float, subset: int, test_subset: int, alpha: float,
                    temperature: float, precision: str) -> None:
    """Queue the fine-tuning of the run at ``run_path`` with the jobs API (a worker process does the work),
    distilling from the unpruned model with weight ``alpha`` (0: not) at ``temperature``, the loss in
    ``precision`` ("auto": float32 on the CPU; "bf16": bf16 autocast there too)."""
    from prunekit.runs import jobs

    try:
        job = jobs.submit("finetune", {"run": str(run_path), "epochs": epochs, "lr": lr, "subset": subset,
                                       "test_subset": test_subset, "batch_size": BATCH, "data": dataset,
                                       "distill_alpha": alpha, "distill_temperature": temperature,
                                       "precision": precision}, owner=visitor())
    except (ValueError, OSError) as exc:
        st.error(f"The job could not be queued: {exc}")
        return
    st.session_state[LAST_JOB], st.session_state[LAST_JOB_RUN] = job.id, str(run_path)
