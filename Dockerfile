# Tessera: one image for every role (receiver, merger, shuffle, worker, simulator); the
# command picks the role, e.g. `docker run tessera receiver --sector 3 --config /etc/tessera.json`.

# --- build: compile TypeScript and the WebAssembly kernels ------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the build runs below, once the sources are there
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY config ./config
COPY src ./src
COPY receivers ./receivers
COPY bench ./bench
RUN npm run build && npm prune --omit=dev

# --- runtime: compiled code and production dependencies only, as a non-root user ---------
FROM node:20-bookworm-slim AS runtime
# MALLOC_MMAP_THRESHOLD_: large result buffers (15-30 MB) straight from mmap and back to the OS
# when freed; glibc's moving threshold otherwise lets a long continuous acquisition grow the
# merger's RSS by hundreds of MB (bench/soak.bench.ts)
ENV NODE_ENV=production TESSERA_LOG_JSON=1 MALLOC_MMAP_THRESHOLD_=131072
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config
COPY deploy/healthcheck.mjs ./deploy/healthcheck.mjs
# recordings go to /data (mount a volume); the default dataDir "./data" points there too
RUN mkdir -p /data && chown node:node /data && ln -s /data /app/data
USER node
# the K2 IS sectors' UDP ports, the merger's HTTP port, and the ZeroMQ ports of the merger
# (control, results, election) and the shuffle (slices, frames) (see config/default.json)
EXPOSE 2001-2008/udp 8080/tcp 7204-7207/tcp 7210/tcp
# checks the role the container runs (read from PID 1's command line): the merger's
# /api/status, a receiver's UDP port, the shuffle's endpoints (deploy/healthcheck.mjs)
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "deploy/healthcheck.mjs"]
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["--help"]
