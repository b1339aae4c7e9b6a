// Small POSIX helpers for crash-safe files: temp names, fsync of files and directories.
// A file we publish is written under a temporary name, fsynced, then renamed, so readers and
// restarts never see half a file.
#pragma once

#include <string>

namespace difftrain::data {

// "<path>.tmp-<pid>": unique per process, so two processes writing the same target do not
// write into each other's temporary file.
std::string temp_path_for(const std::string& path);

// fsync()s an existing file or directory. DataError naming the path on failure.
void fsync_path(const std::string& path);

// Writes bytes to path atomically: temp file, fsync, rename, fsync of the parent directory.
// DataError naming the path on failure; the temp file is removed on failure.
void write_file_atomic(const std::string& path, const std::string& bytes);

// fsyncs temp_path, renames it onto path and fsyncs the parent directory. The temp file is
// removed if the rename fails.
void publish_file(const std::string& temp_path, const std::string& path);

// "<strerror(errno)>" for messages.
std::string errno_text();

}  // namespace difftrain::data
