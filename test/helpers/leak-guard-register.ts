/**
 * Preloaded into every test file's process by scripts/run-tests.mjs (`--import`): fails a test
 * file that leaves a relay, pool, client, socket, child process or timer running. See
 * leak-guard.ts.
 */
import { installLeakGuard } from './leak-guard.js';

installLeakGuard();
