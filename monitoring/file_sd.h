// write_file_sd: publishes scrape targets as a Prometheus file_sd JSON file, so a Prometheus
// that watches a targets folder finds every rank of every run without being reconfigured.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace difftrain::monitoring {

// Writes [{"targets": [...], "labels": {...}}] to `path`, atomically: the JSON goes to
// "<path>.tmp.<pid>" in the same folder, is flushed to disk and renamed over `path`, so a
// Prometheus reading the file never sees half of it (and the temporary name, which does not
// end in .json, never matches a file_sd glob). The folder must exist.
// Prometheus globs only the last path component (`/shared/targets/*.json`, not
// `runs/*/targets.json`): write the file into one shared folder, one file per run or rank.
// targets: "host:port" each, at least one. labels: Prometheus label names
// ([a-zA-Z_][a-zA-Z0-9_]*) to attach to every target (e.g. cluster, job_id; the metrics
// already carry run and rank). Throws std::runtime_error naming the bad target, label or path (with
// the OS reason). Thread safety: concurrent calls for different paths are safe; for one path, the
// last rename wins and the file is always whole.
void write_file_sd(const std::string& path, const std::vector<std::string>& targets,
                   const std::map<std::string, std::string>& labels);

}  // namespace difftrain::monitoring
