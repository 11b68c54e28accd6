# Sourced by the recipes in cluster/ (not run on its own). It runs a step so that SIGTERM stops it at a safe
# point and the job then continues by itself: SIGTERM comes from the time limit (--signal=B:TERM@120 warns
# the batch shell), a preemption, `scancel --signal=TERM --full` or `scontrol requeue`. The step saves and exits
# 143; the job then requeues itself (`scontrol requeue $SLURM_JOB_ID`: same job id, same logs/slurm_<id>/), and
# the next start skips or resumes the finished work. See docs/clusters.md#preemption-and-time-limits.
#
#   MAX_REQUEUES   (default 20) a job that has already restarted this often ends with 143 instead
#   NO_REQUEUE=1   never requeue (the job ends with 143; run it again by hand to continue)

# Installed as soon as this file is read: a signal that comes before the step starts (SLURM may send the
# time-limit warning early) is kept, and the step is then not started at all.
stop_signal=""
trap 'stop_signal=TERM' TERM
trap 'stop_signal=INT' INT

# requeue_self REASON: put this job back in the queue (under SLURM only); says what happened in one line.
requeue_self() {
    local restarts=${SLURM_RESTART_COUNT:-0} message
    if [ -n "${NO_REQUEUE:-}" ] || [ -z "${SLURM_JOB_NODELIST:-}" ] || ! command -v scontrol > /dev/null; then
        echo "$1; not requeued (NO_REQUEUE or not under SLURM): run the job again to continue"
    elif [ "$restarts" -ge "${MAX_REQUEUES:-20}" ]; then
        echo "$1; not requeued: the job has restarted $restarts times (MAX_REQUEUES=${MAX_REQUEUES:-20})"
    elif message=$(scontrol requeue "$SLURM_JOB_ID" 2>&1); then
        echo "$1; requeued job $SLURM_JOB_ID (restart $((restarts + 1))): it continues where it stopped"
    else
        # e.g. the job was cancelled (plain scancel), or SLURM is requeueing it already (scontrol requeue)
        echo "$1; not requeued by this script: ${message:-scontrol requeue failed}"
    fi
}

# signal_step SIGNAL PID: pass a signal on to the running step (train.sbatch redefines it for torchrun).
signal_step() { kill -"$1" "$2" 2> /dev/null || true; }

# stopped_cleanly EXIT_CODE: did the step stop at a safe point after SIGTERM? (train.sbatch redefines it)
stopped_cleanly() { [ "$1" = 143 ]; }

# run_step COMMAND [ARG...]: run the command in the background, pass SIGTERM and SIGINT on to it, and return
# (exit) with its exit code. After SIGTERM, a step that stopped cleanly requeues the job and exits 143.
run_step() {
    if [ -n "$stop_signal" ]; then
        [ "$stop_signal" = TERM ] && requeue_self "SIG$stop_signal before the step started"
        exit 143
    fi
    "$@" &
    local child=$! code
    trap 'stop_signal=TERM; signal_step TERM "$child"' TERM
    trap 'stop_signal=INT; signal_step INT "$child"' INT
    while :; do  # a trap ends `wait` early: wait again until the step has exited
        wait "$child" 2> /dev/null || true
        kill -0 "$child" 2> /dev/null || break
    done
    code=0
    wait "$child" || code=$?  # the step's own exit code (bash keeps it after the step has been reaped)
    if [ "$stop_signal" = TERM ]; then
        if stopped_cleanly "$code"; then
            requeue_self "stopped by SIGTERM at a safe point"
            exit 143
        fi
        # e.g. the signal came while the trainers were still starting, before they handle it: nothing was saved
        echo "SIGTERM: the step ended with exit code $code, not at a safe point; not requeued: submit it again"
    fi
    exit "$code"
}
