/**
 * Try-Confirm-Cancel and sagas on the application's own database: `mailroom/tcc`.
 * See docs/tcc.md and docs/saga.md.
 */
export {
  Coordinator,
  GlobalTransactionAbortedError,
  SAGA_BRANCH_HEADER,
  SAGA_GID_HEADER,
  SAGA_PHASE_HEADER,
  SAGA_REPLY_TO_HEADER,
  type CoordinatorOptions,
  type DecisionInfo,
  type PhaseRetryOptions,
  type RunOptions,
  type RunResult,
} from './coordinator.js';
export {
  BRANCH_PHASES,
  BranchRefusedError,
  BranchUnknownError,
  isBranchRefused,
  type BranchCall,
  type BranchPhase,
  type ParticipantDescriptor,
  type SagaParticipant,
  type SagaPhase,
  type TccParticipant,
  type TccPhase,
} from './participant.js';
export {
  messageStep,
  SAGA_REPLY_TYPE,
  SagaCoordinator,
  sagaReply,
  sagaRequestOf,
  type MessageStepOptions,
  type SagaContext,
  type SagaCoordinatorOptions,
  type SagaReplyOutcome,
} from './saga-coordinator.js';
export {
  TccStateStore,
  type BranchRecord,
  type BranchState,
  type GlobalKind,
  type GlobalRecord,
  type GlobalState,
  type TccStore,
} from './state.js';
export {
  BranchFailedError,
  TccCoordinator,
  type TccContext,
  type TccCoordinatorOptions,
} from './tcc-coordinator.js';
export {
  BarrierOrderError,
  isBarrierOrderError,
  TccBarrier,
  type BarrierOutcome,
  type BarrierPruneOptions,
  type BarrierStore,
  type BranchRef,
  type TccBarrierOptions,
} from './barrier.js';
export {
  httpParticipant,
  httpParticipantFromDescriptor,
  type HttpParticipant,
  type HttpParticipantOptions,
} from './http-participant.js';
export {
  createTccHandler,
  handleTccRequest,
  type TccHandler,
  type TccHandlerOptions,
  type TccPhaseHandler,
  type TccRequest,
  type TccResponse,
} from './http-handler.js';
