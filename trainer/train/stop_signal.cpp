// Stop-signal flag set from a signal handler, read by the training loop.
#include "trainer/train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace difftrain::trainer {
namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

std::atomic<int> g_interrupts{0};

extern "C" void on_stop_signal(int signal_number) {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal_number);
  if (signal_number != SIGINT) return;
  // Ctrl-C: the first stops after the step with a checkpoint, a second one exits at once
  // (the default action). write(), signal() and raise() are async-signal-safe.
  if (g_interrupts.fetch_add(1) == 0) {
    static constexpr char kMessage[] =
        "\ndifftrain: SIGINT: stopping after this step with a checkpoint; Ctrl-C again exits "
        "at once\n";
    const ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
    (void)ignored;
    return;
  }
  std::signal(SIGINT, SIG_DFL);
  std::raise(SIGINT);
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int stop_signal_received() { return g_stop_signal.load(); }

void reset_stop_signal() {
  g_stop_signal.store(0);
  g_interrupts.store(0);
}

const char* signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGINT:
      return "SIGINT";
    default:
      return "signal";
  }
}

}  // namespace difftrain::trainer
