export { type Gateway, type GatewayRouting, startGateway } from './gateway.ts'
