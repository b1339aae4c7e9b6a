// Anchor translation unit for the shared <torch/torch.h> precompiled header.
namespace difftrain {
int torch_pch_anchor() { return 0; }
}  // namespace difftrain
