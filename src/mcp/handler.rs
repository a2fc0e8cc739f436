//! The rmcp server handler: MCP's requests (tools, resources, subscriptions, prompts) answered by
//! the tools, the resources and the prompt.

use super::{resources, tools, BlenderTools, Failure};
use crate::journal::{JobRecord, Listener};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::Arc;

/// The HTTP client's address of a call over Streamable HTTP (None over stdio).
fn http_peer(context: &RequestContext<RoleServer>) -> Option<String> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    let info = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    Some(info.0.to_string())
}

impl ServerHandler for BlenderTools {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_prompts()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("blendwire", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Tools for a running Blender with the blendwire service at {} (start it with `blendwire serve --port {}`). \
                 Resources: blender://scene (subscribable), blender://object/{{name}}, blender://materials, \
                 blender://collections, blender://status. The prompt blender_workflow says how to work with them.",
                self.addr,
                self.client.port()
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools().cloned().collect()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let this = self.for_resources().await?;
        Ok(this.read_resource_at(&request.uri, Some(&context)).await?.into())
    }

    // resources/subscribe is the legacy (handshake) protocol's, which MCP clients negotiate today;
    // rmcp marks it deprecated in favour of 2026-07-28's subscriptions/listen.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let this = self.for_resources().await?;
        this.subscribe_to(&request.uri, context.peer).await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.unsubscribe_from(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(resources::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != resources::WORKFLOW_PROMPT {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown prompt {:?}; the prompt is {}",
                    request.name,
                    resources::WORKFLOW_PROMPT
                ),
                None,
            ));
        }
        Ok(resources::workflow_prompt(request.arguments.as_ref()).into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        // The call's audit lines: a start line before a tool that may change data runs.
        let record = self.audit.as_ref().map(|_| {
            Arc::new(
                JobRecord::new(Listener::Mcp, self.dialect, request.name.to_string())
                    .peer(http_peer(&context))
                    .request_id(serde_json::to_value(&context.id).ok())
                    .code_of(&args),
            )
        });
        if let (Some(audit), Some(record)) = (&self.audit, record.as_ref().filter(|r| r.changes())) {
            // Not written (a full disk): the call still runs; the writer has said why.
            let _ = audit.start(record).await;
        }
        let result = self.dispatch(&request.name, &args, Some(&context)).await;
        if let (Some(audit), Some(record)) = (&self.audit, &record) {
            let outcome = match &result {
                Some(Ok(_)) => "ok",
                Some(Err(_)) => "tool_error",
                None => "unknown_tool",
            };
            audit.end(record, outcome);
        }
        match result {
            Some(Ok(content)) => Ok(CallToolResult::success(content).into()),
            Some(Err(Failure(message))) => Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into()),
            None => Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; the tools are: {}",
                    request.name,
                    tools().map(|t| t.name.as_ref()).collect::<Vec<_>>().join(", ")
                ),
                None,
            )),
        }
    }
}
