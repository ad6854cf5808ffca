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
