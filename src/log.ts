/**
 * Structured logging with pino. Pretty output when a person watches (stderr is a TTY),
 * JSON lines otherwise so that logs of many processes can be collected and parsed.
 */
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const level = process.env.TESSERA_LOG_LEVEL ?? options.level ?? 'info';
  const base: LoggerOptions = { name, level, ...options };
  if (process.stderr.isTTY && process.env.TESSERA_LOG_JSON !== '1') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, colorize: true } } });
  }
  return pino(base, pino.destination({ fd: 2, sync: false }));
}

/**
 * Wait until the lines logged so far are written, at most `timeoutMs`. A transport's (pino-pretty
 * on a terminal) flush callback can fail to come when nothing else keeps the event loop alive
 * (pinojs/pino#2481): a process awaiting it at its end then exits with code 13 (unsettled
 * top-level await) instead of finishing. The timer keeps the loop alive until one of the two.
 */
export function flushLog(log: Pick<Logger, 'flush'>, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    log.flush(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
