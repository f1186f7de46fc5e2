export { MemoryTransport, type MemoryTransportOptions, type MemoryFailure } from './memory-transport.js';
