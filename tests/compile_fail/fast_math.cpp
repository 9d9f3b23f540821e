// -ffast-math would let the compiler delete training's NaN and infinity checks (a NaN loss would
// no longer stop the run before the optimizer's step): ctnn/train/numerics.hpp refuses it and
// names the fix, which the control applies.
// expect: add -fno-finite-math-only
// options: -ffast-math
// control-options: -fno-finite-math-only
#include <ctnn/ctnn.hpp>

int main() {
  const float values[] = {1.0f, 2.0f};
  return ctnn::all_finite(values) ? 0 : 1;
}
