// Sequential, bounded GPTQ calibration of a whole model: block by block, each block's linears quantized from the
// inputs that the already-quantized earlier blocks (and earlier linears of the same block) produce.
#pragma once

#include <shrink/compress/calibration.h>
#include <shrink/compress/gptq.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

struct GptqLayerReport {
  std::string name;
  int64_t rows = 0;          // calibration rows the Hessian was built from
  int64_t dead_columns = 0;  // input features never active: weights zeroed
  double damp_used = 0;
  double time_ms = 0;  // gptq_quantize (the Hessian factorisation included)
};

struct GptqBlockReport {
  int block = -1;             // -1: layers outside the blocks (lm_head; encoders: pooler, classifier)
  double time_ms = 0;         // the whole block: captures, GPTQ, the quantized pass to the next block
  double forward_ms = 0;      // running (parts of) the block over the calibration set
  double gptq_ms = 0;         // Hessians and gptq_quantize
  size_t peak_rss_bytes = 0;  // process high-water mark when the block was done
};

struct GptqReport {
  std::vector<GptqLayerReport> layers;
  std::vector<GptqBlockReport> blocks;
  int64_t calib_rows = 0;       // tokens of the calibration set
  size_t activation_bytes = 0;  // the hidden states kept for the set (decoders: one block's input)
  double time_ms = 0;
};

// Receives the rows of one input a group of linears reads (rows of in_features floats), in calibration order.
using RowSink = std::function<void(const float* x, int64_t rows)>;

// Runs the current block over the held inputs of the first calibration sequences (whole sequences, at most max_rows
// tokens, at least one sequence) with the slots' implementations as they are now, and writes the block's outputs
// ([tokens, hidden], sequence after sequence) into out. The held inputs are not changed.
using BlockProbe = std::function<void(int64_t max_rows, std::vector<float>* out)>;

// What a sequential block walk does with each group of linears sharing one input (LLaMA: {q,k,v} {o} {gate,up}
// {down}; GPT-2: {c_attn} {attn.c_proj} {c_fc} {mlp.c_proj}; lm_head comes last as block -1).
struct GroupVisitor {
  // A sink for the group's input rows, or an empty function to leave the group alone (no pass runs for it).
  std::function<RowSink(int block, const std::vector<LinearSlot*>& group)> capture;
  // After the pass that captured the group's input ended; may replace the group's implementations (GPTQ quantizes
  // here: later groups and the next block then see the quantized group). `probe` runs the block (not for lm_head,
  // block -1, where it is empty).
  std::function<void(int block, const std::vector<LinearSlot*>& group, const BlockProbe& probe)> captured;
};

// Swaps slot implementations for its lifetime (dense fp32 copies of the slots' weights at first); the originals come
// back on destruction (also on error).
class SlotSwap {
 public:
  explicit SlotSwap(std::vector<LinearSlot*> slots);
  SlotSwap(const SlotSwap&) = delete;
  SlotSwap& operator=(const SlotSwap&) = delete;
  ~SlotSwap();
  // Slot i in scheme `spec` (f32: its weights, dense).
  void set(size_t i, const QuantSpec& spec);
  // Slot i as a dense linear with these weights [out, in] (fp32) and its own bias.
  void set_weight(size_t i, const Tensor& weight);
  const Linear& impl(size_t i) const { return *slots_[i]->impl; }
  size_t original_bytes(size_t i) const { return originals_[i]->weight_bytes(); }

 private:
  const Tensor* bias(size_t i) const;
  std::vector<LinearSlot*> slots_;
  std::vector<std::unique_ptr<Linear>> originals_;
};

// The decoder walk shared by GPTQ, AWQ and SmoothQuant: the set is embedded once and one block's input is held
// for every sequence (tokens x hidden floats); for each group of block i a pass of block i on a copy of the held
// states runs until the group's first linear has seen its input (then stops), and after all groups the block runs
// in place to give block i+1 its input. Fills blocks (time_ms; forward_ms = passes; gptq_ms = time in captured()),
// calib_rows and activation_bytes; layers stay empty.
GptqReport walk_decoder_blocks(DecoderModel& model, const CalibSet& set, const GroupVisitor& visit);

// The encoder walk (BERT, DistilBERT: no block entry points): the linears of each layer (the first ".<number>." in
// their name; pooler / classifier last as layer -1) in groups reading one input (q/k/v together, the others alone);
// the groups of one layer are captured in one full forward over the set (one unpadded sequence at a time) with the
// earlier layers as captured() left them, then captured() runs for each (probe empty). Memory: what the sinks keep.
GptqReport walk_encoder_layers(EncoderModel& model, const CalibSet& set, const GroupVisitor& visit);

// Quantizes every slot named in `plan` with GPTQ into its spec's packed Linear, in place.
// Decoders with block entry points (LLaMA, GPT-2; DecoderModel::run_block) run truly sequentially: block i's input
// for all sequences is held (n_tokens x hidden floats); each group of linears sharing an input (q/k/v, o, gate/up,
// down) gets its Hessian from a pass of block i in which the earlier groups are already quantized (the pass stops as
// soon as the input was captured); then the quantized block produces block i+1's input. lm_head (when planned) comes
// last, from the final hidden states. Encoders run walk_encoder_layers: one full forward pass per layer, the layer's
// linears captured together.
// Memory: the held hidden states, one Hessian per captured input and the GPTQ work of one layer.
GptqReport gptq_model(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                      const GptqOptions& opt);

}  // namespace shrink
