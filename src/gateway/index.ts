export { type Gateway, type GatewayRouting, startGateway } from './gateway.ts'
export { RoutedPooler } from './routed-pooler.ts'
