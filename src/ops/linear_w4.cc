// Placeholder until the fast w4 Linear lands: the scalar reference (correct, slow).
#include "ops/qlinear_impl.h"

namespace shrink::detail {

std::unique_ptr<Linear> make_w4_linear(PackedLinear p) { return make_reference_packed_linear(std::move(p)); }

}  // namespace shrink::detail
