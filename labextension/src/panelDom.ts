/** What the sidebar panels (secrets, QPU) build their DOM with: text only, never HTML. */

export function element<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  cls: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  node.className = cls;
  node.textContent = text;
  return node;
}

/** The panel's title with its Refresh button (``refreshClass`` for tests and styles). */
export function panelHeading(
  doc: Document,
  title: string,
  refreshClass: string,
  onRefresh: () => void,
  refreshTitle = ''
): HTMLHeadingElement {
  const heading = element(doc, 'h3', '', title);
  const refresh = element(doc, 'button', `jp-mod-styled ${refreshClass}`, 'Refresh');
  refresh.title = refreshTitle;
  refresh.onclick = onRefresh;
  heading.appendChild(refresh);
  return heading;
}
