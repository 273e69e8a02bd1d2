"""The kernels of a GPU-compiled program, read from its HLO text."""

from jingle_jax.perf import profiling

# What XLA's GPU compiler prints, cut down: a fusion, a copy and a library
# call in the entry, a loop of 6 trips over two fusions (one with a tuple
# of outputs), and a conditional whose branches launch 1 and 3 kernels.
HLO = """HloModule step, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%fused_add (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  ROOT %add.1 = f32[4]{0} add(%param_0, %param_0)
}

%fused_pair (param_0.1: f32[4]) -> (f32[4], f32[4]) {
  %param_0.1 = f32[4]{0} parameter(0)
  %negate.1 = f32[4]{0} negate(%param_0.1)
  ROOT %tuple.1 = (f32[4]{0}, f32[4]{0}) tuple(%negate.1, %param_0.1)
}

%region_add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.2 = f32[] add(%x, %y)
}

%body (state: (s32[], f32[4])) -> (s32[], f32[4]) {
  %state = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %x.1 = f32[4]{0} get-tuple-element(%state), index=1
  %loop_add_fusion = f32[4]{0} fusion(%x.1), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/while/body/add"}
  %loop_pair_fusion = (f32[4]{0}, /*index=1*/f32[4]{0}) fusion(%loop_add_fusion), kind=kLoop, calls=%fused_pair
  %pair.0 = f32[4]{0} get-tuple-element(%loop_pair_fusion), index=0
  ROOT %next = (s32[], f32[4]{0}) tuple(%i, %pair.0)
}

%condition (state.1: (s32[], f32[4])) -> pred[] {
  %state.1 = (s32[], f32[4]{0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%state.1), index=0
  %six = s32[] constant(6)
  ROOT %compare.1 = pred[] compare(%i.1, %six), direction=LT
}

%skip (operand: f32[4]) -> f32[4] {
  %operand = f32[4]{0} parameter(0)
  ROOT %kept = f32[4]{0} fusion(%operand), kind=kLoop, calls=%fused_add
}

%apply (operand.1: f32[4]) -> f32[4] {
  %operand.1 = f32[4]{0} parameter(0)
  %first = f32[4]{0} fusion(%operand.1), kind=kLoop, calls=%fused_add
  %second = f32[4]{0} fusion(%first), kind=kLoop, calls=%fused_add
  ROOT %third = f32[4]{0} fusion(%second), kind=kLoop, calls=%fused_add
}

ENTRY %main (input: f32[4]) -> f32[4] {
  %input = f32[4]{0} parameter(0)
  %copy.1 = f32[4]{0} copy(%input)
  %gemm = (f32[4]{0}, s8[8]{0}) custom-call(%copy.1), custom_call_target="__cublas$lt$matmul"
  %product = f32[4]{0} get-tuple-element(%gemm), index=0
  %sum = f32[] reduce(%product, %product), dimensions={0}, to_apply=%region_add
  %start = (s32[], f32[4]{0}) tuple(%sum, %product)
  %loop = (s32[], f32[4]{0}) while(%start), condition=%condition, body=%body, metadata={op_name="jit(step)/while"}, backend_config={"known_trip_count":{"n":"6"}}
  %looped = f32[4]{0} get-tuple-element(%loop), index=1
  %flag = pred[] constant(true)
  %chosen = f32[4]{0} conditional(%flag, %looped, %looped), true_computation=%apply, false_computation=%skip
  ROOT %out = f32[4]{0} fusion(%chosen), kind=kLoop, calls=%fused_add
}
"""


def test_kernels_are_counted_as_written_and_as_launched():
  kernels = profiling.gpu_kernels(HLO)
  # Written: entry 4 (copy, library call, reduction, fusion), loop body 2,
  # its condition 1, the branches 3 and 1.
  assert kernels['kernels'] == 11
  # Launched: the entry's 4, the body 6 times, the larger branch.
  assert kernels['launches'] == 4 + 6 * 2 + 3
  assert kernels['by_op'] == {'fusion': 6 * 2 + 3 + 1, 'copy': 1,
                              'custom-call': 1, 'reduce': 1}
  assert kernels['loops'] == [('jit(step)/while', 6, 2)]


def test_a_loop_of_unknown_trips_counts_once():
  unknown = HLO.replace(', backend_config={"known_trip_count":{"n":"6"}}', '')
  assert profiling.gpu_kernels(unknown)['launches'] == 4 + 2 + 3
