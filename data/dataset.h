// Dataset: an opened sharded dataset (index.json + shard-*.h5), read by global sample index.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/hdf5_util.h"
#include "data/manifest.h"

namespace difftrain::data {

class Dataset {
 public:
  // Loads dir/index.json and opens every shard read-only, checking each shard's format
  // version, 'images' shape [samples,C,H,W] and uint8 type, and, when the manifest says the
  // dataset is labelled, 'labels' [samples] (read into memory, 8 bytes a sample, and checked
  // to lie in [0, label_count)). No image checksums (that is verify(), which reads every
  // byte). DataError naming the shard file for a missing, corrupt, truncated or mismatched
  // shard, or naming index.json for a bad manifest.
  explicit Dataset(const std::string& dir);

  const Manifest& manifest() const { return manifest_; }
  int64_t size() const { return manifest_.sample_count; }
  const std::string& dir() const { return dir_; }

  // Reads samples by global index (0..size()-1, any order, duplicates allowed) into `images`
  // (indices.size()*C*H*W bytes, CHW per sample, in the order given) and `labels`
  // (indices.size() entries; zeros when unlabelled; may be nullptr). Per shard the indices
  // are sorted and de-duplicated, each run of consecutive rows is read with one hyperslab,
  // and the rows are scattered to the positions asked for (a selection comes back in file
  // order with duplicates merged).
  // DataError for an index out of range or a failed read. Thread-safe: serialised on the
  // library's HDF5 lock.
  void read(const std::vector<int64_t>& indices, uint8_t* images, int64_t* labels) const;

  // The label of sample `index` from the labels held in memory (no HDF5 read); 0 when the
  // dataset is unlabelled. DataError for an index out of range. Thread-safe.
  int64_t label(int64_t index) const;

  // Re-reads every shard, recomputes the SHA-256 of its image bytes and compares it with
  // index.json. Returns one line per problem, each naming the shard file; empty means the
  // images are intact (labels are range-checked when the dataset is opened). With parts > 1,
  // only the shards whose index is `part` modulo `parts` (the ranks of a job share the work).
  // Thread-safe.
  std::vector<std::string> verify(int64_t part = 0, int64_t parts = 1) const;

 private:
  struct Shard {
    std::string path;
    int64_t begin = 0;  // global index of the shard's first sample
    int64_t samples = 0;
    H5Handle file, images;
    std::vector<int64_t> labels;  // the whole shard's labels; empty when unlabelled
  };

  void open_shard(Shard& shard) const;
  // Reads the sorted, unique local rows of one shard into images/labels (labels may be null).
  // Caller holds Hdf5Lock.
  void read_rows(const Shard& shard, const std::vector<int64_t>& rows, uint8_t* images,
                 int64_t* labels) const;

  std::string dir_;
  Manifest manifest_;
  std::vector<Shard> shards_;
};

// Multi-line human summary of a dataset for `difftrain inspect data`: directory, samples,
// shape, dtype, size in bytes, labels, one line per shard, source. Ends with a newline.
std::string describe(const Manifest& manifest, const std::string& dir);

}  // namespace difftrain::data
