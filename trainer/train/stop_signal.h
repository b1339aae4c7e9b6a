// Graceful stop on SIGTERM / SIGUSR1 (preemption, a job's time-limit warning) and SIGINT
// (Ctrl-C): the handler only records the signal; the training loop notices it at the next step,
// agrees with the other ranks, checkpoints and exits 0. A second SIGINT exits at once.
#pragma once

namespace difftrain::trainer {

// Installs handlers for SIGTERM, SIGUSR1 and SIGINT (idempotent). Async-signal-safe: the handler
// only stores the signal number.
void install_stop_signal_handlers();

// The first stop signal received since start-up (or since the last reset), 0 if none.
int stop_signal_received();

// For tests: forget a received signal.
void reset_stop_signal();

// "SIGTERM", "SIGUSR1", ... for log lines.
const char* signal_name(int signal_number);

}  // namespace difftrain::trainer
