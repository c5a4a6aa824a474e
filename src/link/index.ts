export { RemotePooler, type RemotePoolerOptions } from './client.ts'
export { describeAddress, type LinkAddress } from './frames.ts'
export { type LeaseLinkServer, serveLeaseLink } from './server.ts'
