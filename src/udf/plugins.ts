/** placeholder, replaced below */
export function loadedPluginSources(): string[] { return []; }
export async function loadUdfPlugins(_p: string): Promise<string[]> { return []; }
